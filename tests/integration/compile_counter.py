"""Count XLA compilations, to check that a step compiled once is reused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

# The event JAX records once per backend compilation (jax/_src/dispatch.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles() -> Iterator[list[str]]:
    """Collect one entry per XLA compilation inside the block; ``len()`` of it is the count."""
    compiled: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
