"""TLS for the API (uvicorn's ssl options) and the common name of a client's certificate, made known to the
app so that the identity layer can map it (for a worker: a CN equal to its node name).

uvicorn verifies the client certificate against ``--tls-client-ca`` but does not pass it on to the app;
``CertProtocol`` (uvicorn's httptools protocol, with api/wire.py's joined writes) adds it to each request's
scope, as the ASGI TLS extension spells it (``scope["extensions"]["tls"]["client_cert_name"]``: the
subject, RFC 4514), and its common name alone under ``scope["state"]["client_cn"]`` (``request.state.client_cn``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import Scope

from corral.api.wire import JoinedWritesProtocol


def server_options(cert: str | None, key: str | None, client_ca: str | None) -> dict[str, Any]:
    """uvicorn's options for ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (none: plain HTTP).
    A client certificate is optional (a caller may use a token instead) but, when given, must be signed by
    the client CA."""
    if not cert and not key and not client_ca:
        return {}
    if not cert or not key:
        raise ValueError("--tls-cert and --tls-key go together")
    opts: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
    if client_ca:
        opts.update(ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_OPTIONAL, http=CertProtocol)
    return opts


def subject(peercert: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(RFC 4514 subject, common name) of a certificate as ``SSLSocket.getpeercert()`` gives it."""
    if not peercert:
        return None, None
    rdns = [(k, v) for rdn in peercert.get("subject", ()) for k, v in rdn]
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST"}
    dn = ",".join(f"{short.get(k, k)}={v}" for k, v in reversed(rdns))
    cns = [v for k, v in rdns if k == "commonName"]
    return dn or None, (cns[-1] if cns else None)


def client_cn(scope: Scope) -> str | None:
    """The common name of the verified client certificate of this request, if any."""
    cn = (scope.get("state") or {}).get("client_cn")
    return str(cn) if cn else None


class CertProtocol(JoinedWritesProtocol):
    """uvicorn's httptools protocol (with joined writes: api/wire.py), with the verified client
    certificate's subject in every scope."""

    _dn: str | None = None
    _cn: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._dn, self._cn = subject(transport.get_extra_info("peercert"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._dn is not None:
            self.scope["extensions"] = {"tls": {"client_cert_name": self._dn}}
            self.scope["state"]["client_cn"] = self._cn
