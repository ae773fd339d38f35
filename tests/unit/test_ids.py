"""Ids (corral.domain.ids): a version-4 UUID's layout, unique, drawn from os.urandom in batches, and never
the same in a forked child as in its parent."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from corral.domain import ids


def test_an_id_is_a_version_4_uuid_in_32_hex_digits() -> None:
    for _ in range(1000):
        value = ids.new_id()
        assert len(value) == 32 and value == value.lower()
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_are_unique_and_the_kernel_is_asked_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(ids.os, "urandom", counted)
    ids._pool._reset()
    made = {ids.new_id() for _ in range(10 * ids._BATCH)}
    assert len(made) == 10 * ids._BATCH
    assert len(calls) == 10  # one system call per batch, not one per id (each lets go of the GIL)


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    """Nor waits for the pool's lock, held by another thread of the parent when it forked (here: this one)."""
    ids.new_id()  # the pool holds the rest of a batch
    read, write = os.pipe()
    with ids._pool._lock:
        pid = os.fork()
        if pid == 0:  # the child: its next ids, to the parent (killed by the alarm if it waits for the lock)
            signal.alarm(10)
            os.close(read)
            os.write(write, "".join(ids.new_id() for _ in range(8)).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        theirs = f.read()
    os.waitpid(pid, 0)
    ours = "".join(ids.new_id() for _ in range(8))
    assert len(theirs) == len(ours) == 8 * 32
    assert {theirs[i:i + 32] for i in range(0, len(theirs), 32)}.isdisjoint(
        {ours[i:i + 32] for i in range(0, len(ours), 32)})
