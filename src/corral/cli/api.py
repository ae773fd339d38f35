"""The `corral` commands' HTTP layer: a thin wrapper over the client library (corral.client.Client).

Every failure a user can cause or meet (a problem response, a server that is not there, a stream that
breaks) becomes a ``CliError`` with a readable message and the exit status the command should use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from corral import __version__
from corral.client import _core
from corral.client._core import FULL_ID, SHORT_ID, TERMINAL, Json, find_token
from corral.client._core import normalize_url as _normalize
from corral.client.errors import CorralError, Unreachable
from corral.client.sync import Client as LibClient

DEFAULT_SERVER = _core.DEFAULT_URL
# HTTP statuses that mean "what you sent is wrong": the command exits 2, like a usage error.
INPUT_ERRORS = frozenset({400, 413, 415, 422})
UNREACHABLE_HINT = "start one with `corral up`, or point --server / CORRAL_SERVER at yours"

__all__ = ["DEFAULT_SERVER", "FULL_ID", "INPUT_ERRORS", "SHORT_ID", "TERMINAL", "ApiError", "CliError", "Client",
           "Json", "find_token", "normalize_url"]


class CliError(Exception):
    """An expected failure: printed as `error: <message>` without a traceback."""

    def __init__(self, message: str, exit_code: int = 1, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or []


class ApiError(CliError):
    """The server answered with an error (RFC 9457 problem details)."""

    def __init__(self, status: int, detail: str, errors: list[Json] | None = None) -> None:
        fields = [f"{e.get('field', '?')}: {e.get('message', 'invalid')}" for e in errors or []]
        # The detail of a validation problem repeats its field errors: show those one per line instead.
        message = "invalid input" if fields and detail == "; ".join(fields) else detail
        super().__init__(message, 2 if status in INPUT_ERRORS else 1, fields)
        self.status = status


def normalize_url(url: str) -> str:
    try:
        return _normalize(url)
    except ValueError:
        raise CliError("--server is empty: give a URL such as http://127.0.0.1:8000", 2) from None


def cli_error(e: CorralError) -> CliError:
    """The CLI's error for the library's."""
    if isinstance(e, Unreachable):
        hint = [UNREACHABLE_HINT] if e.detail.startswith("cannot reach") else []
        return CliError(e.detail, details=hint)
    return ApiError(e.status, e.detail, e.errors)


@contextlib.contextmanager
def _errors(server: str) -> Iterator[None]:
    try:
        yield
    except CorralError as e:
        raise cli_error(e) from e
    except ValueError as e:  # the library's word for a URL that is not one
        raise CliError(str(e), 2) from e


class Client:
    """The commands' client: corral.client.Client (``lib``) with CliError for every failure, the
    answers as the server's JSON, and the short ids tables show accepted for jobs and nodes."""

    def __init__(self, server: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.server = normalize_url(server)
        with _errors(server):
            # One retry of a read after a broken connection; a server that is not there is said at once.
            self.lib = LibClient(self.server, token, timeout=timeout, retries=1,
                                 user_agent=f"corral-cli/{__version__}")

    @property
    def http(self) -> httpx.Client:
        return self.lib.http

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with _errors(self.server):
            return self.lib.request(method, path, **kw)

    def json(self, method: str, path: str, **kw: Any) -> Json:
        """A request whose answer is a JSON object (errors raised as ApiError, as for request)."""
        r = self.request(method, path, **kw)
        try:
            data = r.json()
        except ValueError as e:
            raise CliError(f"{self.server}{path} did not answer with JSON: is this a Corral server?") from e
        if not isinstance(data, dict):
            raise CliError(f"{self.server}{path} answered with unexpected JSON: is this a Corral server?")
        return data

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(self, spec: Json) -> Json:
        with _errors(self.server):
            return self.lib.submit(spec)

    def list_jobs(self, **params: Any) -> Json:
        return self.json("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})

    def job_id(self, given: str) -> str:
        """The full id of the job whose id is or starts with ``given`` (the short ids tables show, at least
        4 characters). Anything else is passed on as it is, for the server to say what is wrong with it."""
        with _errors(self.server):
            return self.lib.job_id(given)

    def _job_path(self, given: str, suffix: str = "") -> str:
        return f"/v1/jobs/{quote(self.job_id(given), safe='')}{suffix}"

    def job(self, job_id: str) -> Json:
        return self.json("GET", self._job_path(job_id))

    def cancel(self, job_id: str) -> Json:
        return self.json("POST", self._job_path(job_id, "/cancel"))

    def restart(self, job_id: str) -> Json:
        return self.json("POST", self._job_path(job_id, "/restart"))

    def delete(self, job_id: str) -> None:
        self.request("DELETE", self._job_path(job_id))

    def logs(self, job_id: str, tail: int | None = None, follow: bool = False,
             reconnect_for: float = 30.0, task: str | None = None) -> Iterator[Json]:
        """Log lines as dicts (seq, task, task_id, execution_id, stream, line, time), all of them: page
        after page; only ``task``'s (a name or id) when given.

        With ``follow`` the lines stream until the job ends. A stream that breaks (a server restart, a
        proxy timeout) is opened again after the last line seen, for up to ``reconnect_for`` seconds.
        """
        with _errors(self.server):
            yield from self.lib.logs(job_id, task, follow=follow, tail=tail, reconnect_for=reconnect_for)

    # -- schedules ----------------------------------------------------------------------------------

    def create_schedule(self, cron: str, job: Json, name: str | None = None) -> Json:
        body: Json = {"cron": cron, "job": job}
        if name is not None:
            body["name"] = name
        return self.json("POST", "/v1/schedules", json=body)

    def schedules(self) -> Json:
        return self.json("GET", "/v1/schedules")

    def schedule(self, schedule_id: str) -> Json:
        return self.json("GET", _core.path("schedules", schedule_id))

    def pause_schedule(self, schedule_id: str) -> Json:
        return self.json("POST", _core.path("schedules", schedule_id, "/pause"))

    def resume_schedule(self, schedule_id: str) -> Json:
        return self.json("POST", _core.path("schedules", schedule_id, "/resume"))

    def delete_schedule(self, schedule_id: str) -> None:
        self.request("DELETE", _core.path("schedules", schedule_id))

    # -- services -----------------------------------------------------------------------------------

    def create_service(self, spec: Json) -> Json:
        with _errors(self.server):
            return self.lib.services.create(spec)

    def services(self, namespace: str | None = None) -> Json:
        return self.json("GET", "/v1/services", params={"namespace": namespace} if namespace else None)

    def service(self, service_id: str) -> Json:
        with _errors(self.server):
            return self.lib.services.get(service_id)

    def service_endpoints(self, service_id: str) -> Json:
        with _errors(self.server):
            return self.lib.services.endpoints(service_id)

    def delete_service(self, service_id: str) -> None:
        with _errors(self.server):
            self.lib.services.delete(service_id)

    # -- cluster ------------------------------------------------------------------------------------

    def nodes(self) -> Json:
        return self.json("GET", "/v1/nodes")

    def node_id(self, given: str) -> str:
        """The id of the node named ``given``, or whose id is or starts with it (at least 4 characters)."""
        items = self.nodes()["items"]
        found = {n["id"] for n in items if n["id"] == given or n["name"] == given}
        if not found and len(given) >= 4:
            found = {n["id"] for n in items if n["id"].startswith(given)}
        if not found:
            raise ApiError(404, f"no node with the id or name '{given}'")
        if len(found) > 1:
            raise ApiError(409, f"'{given}' names more than one node: give its full id")
        return str(found.pop())

    def drain_node(self, node: str, deadline: str | None = None) -> Json:
        body = {} if deadline is None else {"deadline": deadline}
        return self.json("POST", f"/v1/nodes/{quote(self.node_id(node), safe='')}/drain", json=body)

    def undrain_node(self, node: str) -> Json:
        return self.json("POST", f"/v1/nodes/{quote(self.node_id(node), safe='')}/undrain")

    def queues(self) -> Json:
        return self.json("GET", "/v1/queues")
