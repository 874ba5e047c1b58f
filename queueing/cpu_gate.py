"""How many threads of a worker host run Python code at once.

A host keeps hundreds of calls in flight with a thread each, but only one thread holds the GIL
at a time. When dozens of them are runnable together — starting or recording calls — each one
returning from a Redis or database round trip waits for the GIL and, after 5 ms, forces the
holder to hand it over: the process spends its time switching threads (futex calls in the
kernel) instead of running them. The gate lets ``slots`` threads do their Python work at once;
the others sleep on a semaphore until a slot frees, and nobody holds a slot while waiting for
Anthropic's answer.

Disabled (every call a no-op) until a worker host calls ``enable``: web processes and tests
that call the services directly are not gated.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_gate: threading.Semaphore | None = None
_local = threading.local()


def enable(*, slots: int) -> None:
    global _gate
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots!r}")
    _gate = threading.Semaphore(slots)


def disable() -> None:
    global _gate
    _gate = None


@contextlib.contextmanager
def working() -> Iterator[None]:
    """Hold a slot for the body (a thread already holding one keeps it)."""
    gate = _gate
    if gate is None or getattr(_local, "gate", None) is not None:
        yield
        return
    gate.acquire()
    _local.gate = gate
    try:
        yield
    finally:
        _local.gate = None
        gate.release()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Give the slot up while the body waits on the network; take one again after."""
    gate = getattr(_local, "gate", None)
    if gate is None:
        yield
        return
    _local.gate = None
    gate.release()
    try:
        yield
    finally:
        gate.acquire()
        _local.gate = gate
