"""The measurements: cold compiles, alternating step timings, memory and the copy roofline."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import guard, measure
from benchmarks.pairs import (
    APPLY_UPDATES,
    LEARNING_RATE,
    LIBRARIES,
    OPTKIT_PATHS,
    OptimizerPair,
)
from benchmarks.workloads import Workload, to_device
from benchmarks.workloads import tree_nbytes as nbytes

# The train step with the cheapest update (``p - lr * g``), compiled beside each pair.
FLOOR = "floor"

# Workloads whose compile time follows one trend in the leaf count, from which the guard
# extrapolates. The transformer's few large leaves compile on another curve.
TREND_FAMILIES = ("single", "leaves")


class Log:
    """Progress lines on stderr, stamped with the seconds since the run started."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Inputs:
    """One workload's values: host params every run copies from, and the shared data tree."""

    host_params: Any
    data: Any


class Bench:
    """The measurements of one run: its arguments, log, and the compile-time trend so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log = Log()
        # (library or "copy", optimizer or copy kind) -> [(leaves, lower+compile seconds)]
        self.history: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)

    def skip_reason(self, keys: Sequence[tuple[str, str]], leaves: int) -> str | None:
        """Why a configuration is skipped, or None when it fits the budget (or nothing predicts)."""
        limit = self.args.max_compile_seconds
        if limit <= 0:
            return None
        reasons = []
        for key in keys:
            prediction = guard.predict_seconds(self.history[key], leaves)
            if prediction is not None and prediction.seconds > limit:
                reasons.append(f"{'/'.join(key)} lower+compile {prediction.describe()}")
        if not reasons:
            return None
        return f"over --max-compile-seconds {limit:g}: " + "; ".join(reasons)

    def time_samples(self, runner: measure.Runner) -> dict[str, Any]:
        warm = [runner.run(1) for _ in range(max(self.args.warmup, 1))]
        per_sample = measure.steps_per_sample(min(warm[1:] or warm), self.args.min_sample_seconds)
        samples = [runner.run(per_sample) for _ in range(self.args.samples)]
        return {"warmup_s": warm, "steps_per_sample": per_sample, "samples_s": samples}

    def copies(self, workload: Workload, inputs: Inputs) -> dict[str, Any]:
        """The bandwidth roofline: a donated ``x * 1.0`` over the params' bytes, flat and as the
        same tree (which pays the same per-leaf costs as the optimizer)."""
        leaves = jax.tree.leaves(inputs.host_params)
        host_trees = {
            "flat": np.concatenate([leaf.ravel() for leaf in leaves]),
            "tree": inputs.host_params,
        }
        entry: dict[str, Any] = {"workload": workload.name}
        factor_spec = jax.ShapeDtypeStruct((), jnp.float32)
        for kind, host_tree in host_trees.items():
            count = len(jax.tree.leaves(host_tree))
            reason = self.skip_reason([("copy", kind)], count)
            if reason:
                entry[kind] = {"status": "skipped", "reason": reason}
                self.log(f"{workload.name} {kind} copy skipped: {reason}")
                continue
            spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_tree)
            compiled = measure.cold_compile(measure.copy_tree, (spec, factor_spec), (0,))
            if workload.family in TREND_FAMILIES:
                self.history[("copy", kind)].append((count, compiled.lower_s + compiled.compile_s))
            runner = measure.Runner(
                compiled.executable, (to_device(host_tree),), (jnp.float32(1.0),)
            )
            timing = self.time_samples(runner)
            runner.release()
            step = measure.summarize(timing["samples_s"])
            moved = 2 * nbytes(host_tree)
            entry[kind] = {
                "status": "ok",
                "lower_s": compiled.lower_s,
                "compile_s": compiled.compile_s,
                "bytes_moved": moved,
                **timing,
                "step": step,
                "bandwidth_bytes_per_s": moved / step["median"],
            }
            self.log(f"{workload.name} {kind} copy: {moved / step['median'] / 1e9:.2f} GB/s")
        return entry

    def compile_phase(
        self, workload: Workload, pair: OptimizerPair, order: Sequence[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
        """Cold lower+compile of each library's step, alternating which goes first, repeated;
        and, once, of ``jax.jit(tx.init)`` (whose executable creates the state for the run).
        After each repeat, the floor step's too: its times come back on their own."""
        limit = self.args.max_compile_seconds
        out: dict[str, dict[str, Any]] = {lib: {"lower_s": [], "compile_s": []} for lib in order}
        floor: dict[str, list[float]] = {"lower_s": [], "compile_s": []}
        for repeat in range(self.args.compile_repeats):
            over_budget = False
            for lib in order if repeat % 2 == 0 else order[::-1]:
                tx = pair.factory(lib)()
                compiled = measure.compile_train_step(tx, APPLY_UPDATES[lib], workload.tree)
                out[lib]["lower_s"].append(compiled.lower_s)
                out[lib]["compile_s"].append(compiled.compile_s)
                out[lib]["compiled"] = compiled
                self.log(
                    f"{workload.name} {pair.name} {lib}: lower {compiled.lower_s:.2f} s, "
                    f"compile {compiled.compile_s:.2f} s"
                )
                over_budget |= 0 < limit < compiled.lower_s + compiled.compile_s
                if repeat == 0:  # jit(init) once: users pay it once per run, not per step
                    init = measure.cold_compile(tx.init, (workload.tree,), ())
                    out[lib].update(
                        init_lower_s=init.lower_s,
                        init_compile_s=init.compile_s,
                        init_executable=init.executable,
                    )
            floored = measure.compile_floor_step(LEARNING_RATE, workload.tree)
            floor["lower_s"].append(floored.lower_s)
            floor["compile_s"].append(floored.compile_s)
            self.log(
                f"{workload.name} {FLOOR}: lower {floored.lower_s:.2f} s, "
                f"compile {floored.compile_s:.2f} s"
            )
            if over_budget:  # one cold compile already exceeds the budget: do not repeat it
                break
        return out, floor

    def run_phase(
        self,
        order: Sequence[str],
        compiles: dict[str, dict[str, Any]],
        inputs: Inputs,
    ) -> dict[str, dict[str, Any]]:
        """Allocate each library's params and state, warm up, then time in alternating rounds."""
        args = self.args
        device = jax.devices()[0]
        out: dict[str, dict[str, Any]] = {}
        runners = {}
        for lib in order:
            step = compiles[lib]["compiled"].executable
            device_before = measure.device_memory(device)
            with measure.RssSampler() as rss:
                params = to_device(inputs.host_params)
                opt_state = jax.block_until_ready(compiles[lib]["init_executable"](params))
                runner = measure.Runner(step, (params, opt_state), (inputs.data,))
                del params, opt_state
                warm = [runner.run(1) for _ in range(max(args.warmup, 1))]
            runners[lib] = runner
            out[lib] = {
                "warmup_s": warm,
                "memory": {
                    **rss.result(),
                    "device_before": device_before,
                    "device_after": measure.device_memory(device),
                },
            }
        fastest = min(min(out[lib]["warmup_s"][1:] or out[lib]["warmup_s"]) for lib in order)
        per_sample = measure.steps_per_sample(fastest, args.min_sample_seconds)
        per_round = math.ceil(args.samples / args.rounds)
        for lib in order:
            out[lib].update(steps_per_sample=per_sample, samples_s=[])
        for round_index in range(args.rounds):
            for lib in order if round_index % 2 == 0 else order[::-1]:
                out[lib]["samples_s"] += [runners[lib].run(per_sample) for _ in range(per_round)]
        for runner in runners.values():
            runner.release()
        return out

    def pair(
        self,
        workload: Workload,
        pair: OptimizerPair,
        order: Sequence[str],
        inputs: Inputs,
        copies: dict[str, Any],
    ) -> dict[str, Any]:
        """Every measurement of one optimizer pair on one workload (or why it was skipped)."""
        entry: dict[str, Any] = {
            "workload": workload.name,
            "optimizer": pair.name,
            "num_leaves": workload.num_leaves,
            "num_params": workload.num_params,
            "bytes_per_param_model": pair.bytes_per_param,
            "order": list(order),
            "libraries": {},
        }
        for lib in order:
            state_spec = jax.eval_shape(pair.factory(lib)().init, workload.tree)
            entry["libraries"][lib] = {
                "state": {
                    "bytes": nbytes(state_spec),
                    "bytes_per_param": nbytes(state_spec) / workload.num_params,
                    "leaves": len(jax.tree.leaves(state_spec)),
                }
            }
        keys = [(lib, name) for lib in order for name in (pair.name, f"{pair.name} init")]
        reason = self.skip_reason(keys, workload.num_leaves)
        if reason:
            self.log(f"{workload.name} {pair.name} skipped: {reason}")
            return {**entry, "status": "skipped", "reason": reason}

        compiles, floor = self.compile_phase(workload, pair, order)
        runs = self.run_phase(order, compiles, inputs)
        moved = pair.bytes_per_param * workload.num_params
        for lib in order:
            compiled = compiles[lib].pop("compiled")
            del compiles[lib]["init_executable"]
            record = entry["libraries"][lib]
            record.update(compiles[lib])
            record.update(measure.compile_summary(record["lower_s"], record["compile_s"]))
            total = record["lower_plus_compile_median_s"]
            init_total = record["init_lower_s"] + record["init_compile_s"]
            if workload.family in TREND_FAMILIES:
                self.history[(lib, pair.name)].append((workload.num_leaves, total))
                self.history[(lib, f"{pair.name} init")].append((workload.num_leaves, init_total))
            program = measure.program_size(compiled)
            program["stablehlo_lines_per_leaf"] = program["stablehlo_lines"] / workload.num_leaves
            record["program"] = program
            record["xla_memory"] = measure.memory_analysis(compiled.executable)
            record.update(runs[lib])
            record["step"] = measure.summarize(record["samples_s"])
            bandwidth = moved / record["step"]["median"]
            record["bandwidth_bytes_per_s"] = bandwidth
            for kind in ("flat", "tree"):
                roof = copies.get(kind, {}).get("bandwidth_bytes_per_s")
                record[f"roofline_ratio_{kind}"] = _ratio(bandwidth, roof)
            self.log(
                f"{workload.name} {pair.name} {lib}: step {record['step']['median'] * 1e3:.3f} ms "
                f"(IQR {record['step']['iqr'] * 1e3:.3f}), {bandwidth / 1e9:.2f} GB/s"
            )
        entry["status"] = "ok"
        entry["ratios"] = ratios(entry["libraries"])
        entry[FLOOR] = measure.compile_summary(floor["lower_s"], floor["compile_s"])
        optax_total = entry["libraries"].get("optax", {}).get("lower_plus_compile_median_s")
        floor_total = entry[FLOOR]["lower_plus_compile_median_s"]
        entry[FLOOR]["over_optax"] = _ratio(floor_total, optax_total)
        return entry


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


RATIO_FIELDS = {
    "lower": lambda r: r["lower"]["median"],
    "compile": lambda r: r["compile"]["median"],
    "lower_plus_compile": lambda r: r["lower_plus_compile_median_s"],
    "init_lower_plus_compile": lambda r: r["init_lower_s"] + r["init_compile_s"],
    "step": lambda r: r["step"]["median"],
    "state_bytes": lambda r: r["state"]["bytes"],
    "xla_peak_bytes": lambda r: r["xla_memory"]["peak_bytes"],
    "rss_peak_delta": lambda r: r["memory"]["rss_peak_delta_bytes"],
    "stablehlo_lines": lambda r: r["program"]["stablehlo_lines"],
}


def ratios(libraries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For each optkit path, path / optax for each headline number (below 1: optkit smaller or
    faster)."""
    if not set(LIBRARIES) <= set(libraries):
        return {}
    theirs = libraries["optax"]
    return {
        path: {
            name: _ratio(get(libraries[path]), get(theirs)) for name, get in RATIO_FIELDS.items()
        }
        for path in OPTKIT_PATHS
    }
