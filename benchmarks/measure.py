"""Measurement primitives: cold lowering and compilation, step timing, memory and bandwidth."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import psutil


def summarize(samples: Sequence[float]) -> dict[str, float | int | None]:
    """Median, quartiles and IQR of ``samples`` (``None`` fields when there are none)."""
    if not samples:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None, "min": None}
    q1, median, q3 = np.percentile(np.asarray(samples, dtype=np.float64), [25, 50, 75])
    return {
        "n": len(samples),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "min": float(min(samples)),
    }


def disable_compilation_cache() -> None:
    """Make every compile cold: no persistent cache, so neither library reuses the other's work."""
    jax.config.update("jax_enable_compilation_cache", False)


def _loss(params: Any, data: Any) -> jax.Array:
    """``0.5 * sum((p - x)**2)`` over all leaves, so the gradient is ``g = p - x``."""
    per_leaf = jax.tree.map(lambda p, x: jnp.sum(jnp.square(p - x)), params, data)
    return 0.5 * sum(jax.tree.leaves(per_leaf))


def make_train_step(tx: Any, apply_updates: Callable[[Any, Any], Any]) -> Callable:
    """A train step on ``loss = 0.5 * sum((p - x)**2)`` over all leaves: ``g = p - x``.

    The data tree ``x`` makes the gradient a real read of one float per parameter (as a batch's
    gradient is), where ``sum(p**2)`` would let XLA compute ``g = 2p`` from the params it already
    reads.
    """

    def step(params: Any, opt_state: Any, data: Any) -> tuple[Any, Any]:
        grads = jax.grad(_loss)(params, data)
        updates, opt_state = tx.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state

    return step


def make_floor_step(learning_rate: float) -> Callable:
    """The same train step with the cheapest update there is, ``p - lr * g`` and no state.

    Every optimizer's step computes these gradients and writes every param, so this step's
    lower+compile time is a floor under all of them: divided by optax's, it is the smallest
    ratio any optimizer could reach on this workload.
    """

    def step(params: Any, data: Any) -> Any:
        grads = jax.grad(_loss)(params, data)
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)

    return step


@dataclasses.dataclass
class Compiled:
    """One cold lowering and compilation of a jitted function."""

    lower_s: float
    compile_s: float
    executable: Any
    lowered: Any


def cold_compile(fn: Callable, args: Sequence[Any], donate_argnums: tuple[int, ...]) -> Compiled:
    """Trace+lower then compile ``jax.jit(fn)`` for ``args`` after clearing JAX's caches."""
    jax.clear_caches()
    start = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=donate_argnums).lower(*args)
    lowered_at = time.perf_counter()
    executable = lowered.compile()
    done = time.perf_counter()
    return Compiled(lowered_at - start, done - lowered_at, executable, lowered)


def compile_train_step(tx: Any, apply_updates: Callable[[Any, Any], Any], tree: Any) -> Compiled:
    """Cold lower+compile of :func:`make_train_step` on the abstract ``tree`` (params and data),
    with params and optimizer state donated."""
    state = jax.eval_shape(tx.init, tree)
    return cold_compile(make_train_step(tx, apply_updates), (tree, state, tree), (0, 1))


def compile_floor_step(learning_rate: float, tree: Any) -> Compiled:
    """Cold lower+compile of :func:`make_floor_step` on the abstract ``tree``, params donated."""
    return cold_compile(make_floor_step(learning_rate), (tree, tree), (0,))


def compile_summary(lower_s: Sequence[float], compile_s: Sequence[float]) -> dict[str, Any]:
    """Medians and spread of repeated cold compiles, and the sum of the two medians."""
    lower, compile_ = summarize(lower_s), summarize(compile_s)
    return {
        "lower": lower,
        "compile": compile_,
        "lower_plus_compile_median_s": lower["median"] + compile_["median"],
    }


def program_size(compiled: Compiled) -> dict[str, int]:
    """Lines of the lowered StableHLO and of the optimized HLO (instruction counts, roughly)."""
    sizes = {"stablehlo_lines": len(compiled.lowered.as_text().splitlines())}
    with contextlib.suppress(Exception):  # some backends cannot print the optimized module
        sizes["optimized_hlo_lines"] = len(compiled.executable.as_text().splitlines())
    return sizes


def memory_analysis(executable: Any) -> dict[str, int | None]:
    """XLA's own accounting of one execution: arguments, outputs, aliasing and scratch bytes.

    ``peak_bytes`` = arguments + outputs - aliased (donated) + temporaries: the device memory the
    step needs at once, exact and independent of what else the process holds.
    """
    try:
        stats = executable.memory_analysis()
    except Exception:
        stats = None
    if stats is None:
        return {"peak_bytes": None}
    fields = {
        name: int(getattr(stats, f"{name}_in_bytes", 0) or 0)
        for name in ("argument_size", "output_size", "alias_size", "temp_size")
    }
    fields["peak_bytes"] = (
        fields["argument_size"] + fields["output_size"] - fields["alias_size"] + fields["temp_size"]
    )
    return fields


def device_memory(device: Any) -> dict[str, int] | None:
    """``bytes_in_use`` and ``peak_bytes_in_use`` of the device's allocator (GPU; None on CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return {
        key: int(stats[key]) for key in ("bytes_in_use", "peak_bytes_in_use") if key in stats
    } or None


class RssSampler:
    """Samples this process's resident set size on a thread; ``peak_delta`` is over the start.

    Used as a context manager around allocation, ``init`` and warm-up steps. The main thread
    releases the GIL while it waits on XLA, so the sampler sees the peak of the work in between.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = 0
        self.peak = 0
        self.end = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self._process.memory_info().rss
        self.peak = max(self.peak, self.end)

    def result(self) -> dict[str, int]:
        return {
            "rss_baseline_bytes": self.baseline,
            "rss_peak_delta_bytes": self.peak - self.baseline,
            "rss_end_delta_bytes": self.end - self.baseline,
        }


class Runner:
    """Holds live arrays and runs a compiled program that donates and returns its ``carry``.

    For a train step the carry is ``(params, opt_state)`` and the constant is the data tree; for
    the copy roofline the carry is ``(tree,)`` and the constant is the scale factor.
    """

    def __init__(self, executable: Any, carry: tuple[Any, ...], consts: tuple[Any, ...]) -> None:
        self.executable = executable
        self.carry = carry
        self.consts = consts

    def run(self, steps: int) -> float:
        """Run ``steps`` calls back to back and wait for the last; returns seconds per call."""
        start = time.perf_counter()
        for _ in range(steps):
            out = self.executable(*self.carry, *self.consts)
            self.carry = out if len(self.carry) > 1 else (out,)
        jax.block_until_ready(self.carry)
        return (time.perf_counter() - start) / steps

    def release(self) -> None:
        self.carry = self.consts = ()


def steps_per_sample(seconds_per_step: float, min_sample_s: float, cap: int = 1000) -> int:
    """How many back-to-back calls make one timed sample last at least ``min_sample_s``."""
    if seconds_per_step <= 0:
        return cap
    return max(1, min(cap, math.ceil(min_sample_s / seconds_per_step)))


def copy_tree(tree: Any, factor: jax.Array) -> Any:
    """``x * factor`` on every leaf: one read and one write per element, the bandwidth roofline.

    ``factor`` is an argument (1.0 at run time), not a constant, so XLA cannot fold the multiply
    away and turn the donated copy into a no-op.
    """
    return jax.tree.map(lambda x: x * factor.astype(x.dtype), tree)
