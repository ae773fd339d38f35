"""The pure parts of the `corral` commands: short ids, the workflow tree, log lines, --since, completion,
exit statuses and Ctrl-C, and that every command's --help has an example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from corral.cli import client as cli_client
from corral.cli.api import CliError
from corral.cli.completion import complete_states
from corral.cli.ids import pick
from corral.cli.main import build
from corral.cli.output import LogPrinter, task_tree

A = "1ed3f2031683" + "a" * 20
B = "1ed3f2031683" + "b" * 20
C = "9c0a00000000" + "c" * 20
cli = build()


def test_a_short_id_picks_the_one_id_it_starts() -> None:
    ids = [(A, "build"), (C, "test")]
    assert pick(A, "job", ids) == A
    assert pick("9c0a", "job", ids) == C
    assert pick("1ed3f2031683", "job", ids) == A


def test_an_ambiguous_prefix_names_the_matches_and_an_unknown_one_says_so() -> None:
    with pytest.raises(CliError) as e:
        pick("1ed3", "job", [(A, "build"), (B, ""), (C, "x")], total=3)
    msg = str(e.value)
    assert msg.startswith("id prefix 1ed3 matches 3 jobs: ") and "1ed3f2031683 (build)" in msg
    assert "\n" not in msg and e.value.exit_code == 1
    with pytest.raises(CliError, match="and 7 more"):
        pick("1ed3", "job", [(A, ""), (B, "")] * 3, total=12)
    with pytest.raises(CliError, match="no schedule with an id that starts with 'ffff'"):
        pick("ffff", "schedule", [(A, "")])
    with pytest.raises(CliError, match="at least 4 characters"):
        pick("1ed", "pod", [(A, "")])  # too short to be a prefix: only a whole id


def _task(tid: str, name: str, pos: int, parent: str | None = None, kind: str = "run", **more: Any) -> dict[str, Any]:
    return {"id": tid, "name": name, "position": pos, "parent_id": parent, "kind": kind, **more}


def test_a_workflow_is_shown_as_a_tree_with_names_told_apart() -> None:
    tasks = [
        _task("r", "report", 2, kind="steps", pre=[{"run": "x"}], post=[{"run": "y"}]),
        _task("p", "checks", 1, kind="parallel"),
        _task("a", "prepare", 0),
        _task("p1", "check", 0, "p"), _task("p2", "check", 1, "p"),
        _task("r0", "upload", 0, "r"), _task("r1", "report", 1, "r"), _task("r2", "notify", 2, "r"),
        _task("s", "child", 3, kind="subjob", subjob_id="f" * 32),
    ]
    rows = [(n, label) for n, label, _ in task_tree(tasks)]
    assert rows == [
        ("1", "prepare"),
        ("2", "checks (parallel)"),
        ("2.1", "├─ check"),
        ("2.2", "└─ check#2"),
        ("3", "report (with pre/post)"),
        ("3.1", "├─ pre: upload"),
        ("3.2", "├─ report"),
        ("3.3", "└─ post: notify"),
        ("4", "child (subjob ffffffffffff)"),
    ]


def test_log_lines_get_times_prefixes_and_a_separator_between_attempts() -> None:
    p = LogPrinter(prefixes=True, timestamps=True, width=5)
    line = {"task": "build", "task_id": "t1", "execution_id": "e1", "stream": "stdout", "line": "hi",
            "time": "2026-05-01T12:00:00Z"}
    assert p.render(line) == [("stdout", "2026-05-01T12:00:00Z build | hi")]
    assert p.render({**line, "task": "t", "task_id": "t2", "stream": "stderr"}) == [
        ("stderr", "2026-05-01T12:00:00Z t     | hi")]
    again = p.render({**line, "execution_id": "e2"})
    assert again[0] == ("stderr", "--- build: another attempt (execution e2) ---") and len(again) == 2
    plain = LogPrinter()
    assert plain.render(line) == [("stdout", "hi")]
    coloured = LogPrinter(prefixes=True, colour=True).render(line)[0][1]
    assert "\x1b[" in coloured and coloured.endswith("hi")


def test_log_lines_are_picked_by_task_and_time() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    since = cli_client.parse_since("10m", now)
    assert since == now - timedelta(minutes=10)
    assert cli_client.parse_since("2026-05-01T11:00:00Z", now) == datetime(2026, 5, 1, 11, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        cli_client.parse_since("yesterday", now)
    wanted = cli_client.line_filter("build", since)
    old = {"task": "build", "task_id": "abcdef12", "time": "2026-05-01T11:00:00Z"}
    new = {**old, "time": "2026-05-01T11:55:00Z"}
    assert not wanted(old) and wanted(new) and not wanted({**new, "task": "test", "task_id": "0000"})
    assert cli_client.line_filter("abcd", None)({**new, "task": "other"})  # an id prefix


def test_states_complete_in_a_comma_list() -> None:
    ctx = click.Context(click.Command("x"))
    param = click.Option(["--state"])
    assert [c.value for c in complete_states(ctx, param, "r")] == ["running"]
    assert [c.value for c in complete_states(ctx, param, "running,c")] == ["running,completed", "running,cancelled"]


def test_completion_scripts_for_each_shell() -> None:
    for shell, mark in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        r = CliRunner().invoke(cli, ["completion", shell], prog_name="corral")
        assert r.exit_code == 0 and mark in r.output and "_CORRAL_COMPLETE" in r.output, r.output


def test_commands_and_states_complete() -> None:
    def complete(args: list[str], incomplete: str) -> list[str]:
        return [c.value for c in ShellComplete(cli, {}, "corral", "_CORRAL_COMPLETE")
                .get_completions(args, incomplete)]

    assert "completion" in complete([], "comp")
    assert complete(["jobs", "ls", "--state"], "fa") == ["failed"]
    # Ids come from the server; one that does not answer completes nothing, quickly.
    assert complete(["jobs", "get", "--server", "http://127.0.0.1:9"], "") == []


def _commands(group: click.Group, path: str = "corral") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{path} {name}")
        else:
            out.append((f"{path} {name}", cmd))
    return out


def test_every_command_help_has_an_example() -> None:
    missing = [path for path, cmd in _commands(cli)
               if "Example" not in cmd.get_help(click.Context(cmd, info_name=path))]
    assert not missing, missing


class _Jobs:
    """A stand-in Client: cancel is recorded; reading the job raises what it is given (a second Ctrl-C)."""

    def __init__(self, on_read: BaseException | None) -> None:
        self.cancelled: list[str] = []
        self.on_read = on_read

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.cancelled.append(job_id)
        return {"id": job_id, "state": "cancelled"}

    def job(self, job_id: str) -> dict[str, Any]:
        if self.on_read is not None:
            raise self.on_read
        return {"id": job_id, "state": "cancelled", "tasks": []}


def test_ctrl_c_cancels_and_a_second_one_detaches(capsys: pytest.CaptureFixture[str]) -> None:
    c = _Jobs(None)
    assert cli_client.interrupted(c, A, ask=False) == 130  # type: ignore[arg-type]
    assert c.cancelled == [A] and f"job {A} cancelled" in capsys.readouterr().err
    twice = _Jobs(KeyboardInterrupt())
    assert cli_client.interrupted(twice, A, ask=False) == 130  # type: ignore[arg-type]
    assert twice.cancelled == [A] and "detached; the job goes on" in capsys.readouterr().err


def test_a_timed_out_task_exits_124() -> None:
    job = {"id": A, "state": "failed", "error": "task t: timed out after 1s",
           "tasks": [{"state": "failed", "exit_code": 124, "error": "timed out after 1s"}]}
    assert cli_client.run_status(job) == 124
    job["tasks"][0].update(exit_code=127, error="exec: 'nope': not found")
    assert cli_client.run_status(job) == 127


def test_podling_suggests_the_field_meant() -> None:
    from corral.api.dialects.podling import DialectError, pod_spec, task_spec
    with pytest.raises(DialectError, match="unknown field imgae: did you mean image\\? a task holds"):
        task_spec({"name": "t", "imgae": "busybox"})
    with pytest.raises(DialectError, match="unknown field contaners: did you mean containers\\?"):
        pod_spec({"name": "p", "contaners": []})
    with pytest.raises(DialectError, match="unknown field zzz: a task holds"):
        task_spec({"name": "t", "zzz": 1})


def test_completion_installs_where_the_shell_looks(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["completion", "fish", "--install"], prog_name="corral", env={"HOME": str(tmp_path)})
    assert r.exit_code == 0, r.output
    script = tmp_path / ".config" / "fish" / "completions" / "corral.fish"
    assert "_CORRAL_COMPLETE" in script.read_text()
