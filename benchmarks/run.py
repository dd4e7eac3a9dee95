"""Benchmark optkit against optax: compile time, step time, memory and bandwidth, one process.

    python -m benchmarks.run --out benchmarks/results/cpu        # full run
    python -m benchmarks.run --quick --out /tmp/optkit-bench     # tiny sizes, about a minute

Writes ``results.json`` (every raw measurement), ``results.md`` and ``results.png`` under
``--out``. See ``benchmarks/README.md`` for the method.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks import machine, measure, report
from benchmarks.bench import Bench, Inputs
from benchmarks.pairs import LIBRARIES, PAIRS
from benchmarks.workloads import (
    Workload,
    host_random,
    many_leaves,
    single_leaf,
    to_device,
    transformer,
)

SCHEMA_VERSION = 3
FAMILIES = ("single", "leaves", "transformer")

# ~100M parameters on CPU (GPT-2 small's shape), ~1B on accelerators.
TRANSFORMER_SIZES = {
    "cpu": {"layers": 12, "width": 768, "vocab": 32000, "seq_len": 1024},
    "accelerator": {"layers": 18, "width": 2048, "vocab": 32000, "seq_len": 2048},
}
QUICK = {
    "single_size": 2**16,
    "leaf_counts": [10, 50],
    "leaf_size": 1000,
    "layers": 2,
    "width": 64,
    "vocab": 512,
    "seq_len": 64,
    "samples": 6,
    "rounds": 2,
    "warmup": 2,
    "compile_repeats": 2,
    "min_sample_seconds": 0.002,
}


def _csv(kind: type) -> Any:
    return lambda text: [kind(item) for item in text.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--out", type=Path, help="output folder (default benchmarks/results/<backend>)")
    add("--quick", action="store_true", help="tiny workloads and few repeats, for smoke tests")
    add(
        "--workloads",
        type=_csv(str),
        default=list(FAMILIES),
        help=f"comma-separated families (default {','.join(FAMILIES)})",
    )
    add(
        "--optimizers",
        type=_csv(str),
        default=list(PAIRS),
        help=f"comma-separated optimizer pairs (default {','.join(PAIRS)})",
    )
    add("--single-size", type=int, help="elements of the single leaf (default 2**24 = 16M)")
    add(
        "--leaf-counts",
        type=_csv(int),
        help="comma-separated leaf counts (default 100,1000,2000,10000)",
    )
    add("--leaf-size", type=int, help="elements per leaf in the many-leaf trees (default 4000)")
    add("--layers", type=int, help="transformer depth (default 12 on CPU, 18 on GPU/TPU)")
    add("--width", type=int, help="transformer width (default 768 on CPU, 2048 on GPU/TPU)")
    add("--vocab", type=int, help="transformer vocabulary (default 32000)")
    add("--seq-len", type=int, help="transformer position-embedding rows (default 1024/2048)")
    add("--samples", type=int, help="timed samples per library (default 30)")
    add("--rounds", type=int, help="alternating optkit/optax blocks the samples split into (5)")
    add("--warmup", type=int, help="untimed steps before sampling (default 3)")
    add("--compile-repeats", type=int, help="cold lower+compile repeats per library (default 3)")
    add("--min-sample-seconds", type=float, help="steps per sample grow to last this long (0.01)")
    add(
        "--max-compile-seconds",
        type=float,
        default=60.0,
        help="skip configurations whose lower+compile is predicted, from smaller leaf counts, "
        "to exceed this (<= 0: never skip; default %(default)s)",
    )
    add("--seed", type=int, default=0)
    add("--no-plot", action="store_true", help="write no PNG")
    args = parser.parse_args(argv)

    backend = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    defaults = {
        "single_size": 2**24,
        "leaf_counts": [100, 1000, 2000, 10000],
        "leaf_size": 4000,
        **TRANSFORMER_SIZES[backend],
        "samples": 30,
        "rounds": 5,
        "warmup": 3,
        "compile_repeats": 3,
        "min_sample_seconds": 0.01,
    }
    if args.quick:
        defaults.update(QUICK)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = Path("benchmarks/results") / jax.default_backend()
    unknown = sorted(set(args.workloads) - set(FAMILIES)) + sorted(
        set(args.optimizers) - set(PAIRS)
    )
    if unknown:
        parser.error(
            f"unknown workload or optimizer {unknown}; choose from {FAMILIES}, {list(PAIRS)}"
        )
    return args


def build_workloads(args: argparse.Namespace) -> list[Workload]:
    """The selected workloads, fewest leaves first so the compile-time trend is known early."""
    workloads = []
    if "single" in args.workloads:
        workloads.append(single_leaf(args.single_size))
    if "leaves" in args.workloads:
        workloads += [many_leaves(count, args.leaf_size) for count in args.leaf_counts]
    if "transformer" in args.workloads:
        workloads.append(transformer(args.layers, args.width, args.vocab, args.seq_len))
    return sorted(workloads, key=lambda workload: workload.num_leaves)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results also written to ``--out``/results.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    measure.disable_compilation_cache()
    bench = Bench(args)
    args.out.mkdir(parents=True, exist_ok=True)
    workloads = build_workloads(args)
    config = {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "machine": machine.describe(argv),
        "config": config,
        "pairs": {
            name: {"bytes_per_param": p.bytes_per_param, "traffic": p.traffic, "note": p.note}
            for name, p in PAIRS.items()
            if name in args.optimizers
        },
        "workloads": [workload.summary() for workload in workloads],
        "copies": [],
        "measurements": [],
    }
    json_path = args.out / "results.json"
    for workload in workloads:
        bench.log(f"workload {workload.name}: {workload.description}, {workload.num_leaves} leaves")
        host_params = host_random(workload.tree, args.seed)
        inputs = Inputs(host_params, to_device(host_random(workload.tree, args.seed + 1)))
        copies = bench.copies(workload, inputs)
        results["copies"].append(copies)
        for index, name in enumerate(args.optimizers):
            order = LIBRARIES if index % 2 == 0 else LIBRARIES[::-1]
            results["measurements"].append(bench.pair(workload, PAIRS[name], order, inputs, copies))
            report.write_json(json_path, results)
        del inputs, host_params
        gc.collect()
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["machine"]["wall_seconds"] = time.perf_counter() - bench.log.start
    report.write_json(json_path, results)
    report.write_markdown(results, args.out / "results.md")
    if not args.no_plot:
        report.write_plot(results, args.out / "results.png")
    bench.log(f"wrote {json_path}, results.md{'' if args.no_plot else ', results.png'}")
    return results


if __name__ == "__main__":
    main()
