"""The server flags of the Stacks API and --dialect-port refuse bad values before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corral.cli.serve import server


@pytest.mark.parametrize(("args", "message"), [
    (["--dialect-port", "nope=8081"], "NAME one of podling, stacks"),
    (["--dialect-port", "stacks"], "NAME=PORT"),
    (["--dialect-port", "stacks=70000"], "NAME=PORT"),
    (["--dialect-port", "stacks=8000"], "a port of its own"),
    (["--dialect-port", "stacks=8081", "--dialect-port", "stacks=8082"], "each dialect once"),
    (["--stacks-ttl", "0s"], "longer than zero"),
    (["--stacks-ttl", "soon"], "--stacks-ttl"),
    (["--stacks-quota", "gpus=1"], "KEY one of cpu, memory, pods"),
    (["--stacks-quota", "cpu=lots"], "not a quantity"),
    (["--stacks-limit-range", "min.cpu=2,max.cpu=1"], "min.cpu is more than max.cpu"),
])
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(server, ["--port", "8000", "--database-url", "sqlite:///:memory:", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
