"""Secrets encrypted at rest: job ``secrets``, webhook headers and registry passwords, sealed with the
server's key (``cryptography``'s Fernet; several keys with MultiFernet, for rotation) as they are written and
opened as they are read, by the column type ``SealedJSON`` of the specs that hold them (jobs, tasks and
their templates, schedules). The rest of the code sees plain specs; the database file holds only ciphertext
for these values.

What is sealed in a spec, at any depth: the values of a ``secrets`` map, ``registry.password``, the values
of each ``webhooks[].headers``, and any text marked ``SecretText`` (a task's fields that an expression filled
from a secret: ``mark``). A sealed value is the text ``corral-sealed:v1:`` followed by a Fernet token.

The keys are the process's (``configure``): one server, one key set, given at start (corral.cli.serve reads
them from ``--secret-key-file``, ``CORRAL_SECRET_KEY`` or a file it makes in the data dir). Without keys,
nothing is sealed (a store opened by a tool or a test), and a sealed value read back stays sealed (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("corral.store")

PREFIX = "corral-sealed:v1:"


class SecretText(str):
    """Text that holds a secret: sealed wherever it is written in a spec."""

    __slots__ = ()


class _Keys:
    fernet: MultiFernet | None = None


_KEYS = _Keys()


def configure(keys: Sequence[str | bytes]) -> None:
    """Seal with the first key; open with any (the older ones, while data sealed with them remains)."""
    if not keys:
        _KEYS.fernet = None
        return
    try:
        _KEYS.fernet = MultiFernet([Fernet(k) for k in keys])
    except (ValueError, TypeError) as e:
        raise ValueError("a secret key is 32 url-safe base64-encoded bytes, as Fernet.generate_key() makes "
                         "(one per line in the key file)") from e


def new_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(text: str) -> list[str]:
    """The keys of a key file or of CORRAL_SECRET_KEY: one per line (or comma-separated), blank lines and
    '#' comments skipped; the first one seals."""
    out = []
    for line in text.replace(",", "\n").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def seal_text(text: str) -> str:
    f = _KEYS.fernet
    if f is None or text.startswith(PREFIX):
        return str(text)
    return PREFIX + f.encrypt(text.encode("utf-8", "surrogatepass")).decode()


def open_text(text: str) -> str:
    f = _KEYS.fernet
    if f is None:
        log.error("a sealed secret was read, but this server has no secret key: give the one it was sealed "
                  "with (--secret-key-file or CORRAL_SECRET_KEY)")
        return text
    try:
        return f.decrypt(text[len(PREFIX):].encode()).decode("utf-8", "surrogatepass")
    except InvalidToken:
        log.error("a sealed secret could not be opened with this server's keys: was the key that sealed it "
                  "removed from --secret-key-file?")
        return text


def mark(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (a task spec, say) with each text that holds one of ``secrets`` marked as SecretText."""
    texts = [s for s in secrets if s]
    if not texts:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return SecretText(v) if any(s in v for s in texts) else v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def seal(value: Any) -> Any:
    """A spec as stored: its secrets sealed (a copy; ``value`` is not changed)."""
    if _KEYS.fernet is None:
        return value

    def walk(v: Any, key: str | None = None) -> Any:
        if isinstance(v, SecretText):
            return seal_text(v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k == "secrets" and isinstance(x, dict):
                    out[k] = {n: seal_text(s) if isinstance(s, str) else s for n, s in x.items()}
                elif k == "registry" and isinstance(x, dict) and isinstance(x.get("password"), str):
                    out[k] = {**walk(x), "password": seal_text(x["password"])}
                elif k == "headers" and key == "webhook" and isinstance(x, dict):
                    out[k] = {n: seal_text(h) if isinstance(h, str) else h for n, h in x.items()}
                else:
                    out[k] = walk(x, "webhook" if k == "webhooks" else None)
            return out
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        return v

    return walk(value)


def unseal(value: Any) -> Any:
    """A spec as read: every sealed text opened."""
    if isinstance(value, str):
        return open_text(value) if value.startswith(PREFIX) else value
    if isinstance(value, dict):
        return {k: unseal(x) for k, x in value.items()}
    if isinstance(value, list):
        return [unseal(x) for x in value]
    return value


class SealedJSON(sa.types.TypeDecorator[Any]):
    """A JSON column whose secrets are sealed at rest (see the module's docstring)."""

    impl = sa.JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return seal(value) if value is not None else None

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return unseal(value) if value is not None else None
