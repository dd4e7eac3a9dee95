"""Optimizer-state memory and step time of float32, 8-bit and 4-bit AdamW, and ZeRO-1 shares.

    python -m benchmarks.memory --out benchmarks/results/memory-cpu    # CPU, ~110M params
    python -m benchmarks.memory --out benchmarks/results/memory-gpu    # GPU (auto-detected)
    python -m benchmarks.memory --quick --out /tmp/optkit-memory       # tiny sizes, seconds

On the transformer-shaped tree of ``benchmarks.run`` (GPT-2 small's shape, about 110M
parameters, on every backend), for optax's and optkit's AdamW and for
``optkit.quantize_state`` of optkit's AdamW at 8 and 4 bits: the state's bytes per parameter
(from its arrays), XLA's peak memory of the compiled train step, the device allocator's bytes
(GPU) and the step time, each relative to optkit's float32 AdamW measured in the same process
in alternating rounds. Then, in a subprocess with 8 simulated CPU devices
(``benchmarks.memory_zero``), each optimizer's state partitioned with ``optkit.state_sharding``
(ZeRO-1): per-device bytes against the total. With ``--torch`` (CPU), torch's AdamW
(default and fused) and torchao's ``AdamW8bit``/``AdamW4bit`` on the same tree join the
alternating rounds (``benchmarks.memory_torch``).

Writes ``results.json``, ``results.md`` and ``results.png`` under ``--out`` (and the PNG to
``--figure`` when given: the docs figure is only rewritten on request); see
``benchmarks/README.md`` ("Memory and scale") for the method.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks import machine, measure, memory_report
from benchmarks.bench import Log
from benchmarks.report import write_json
from benchmarks.run import QUICK, TRANSFORMER_SIZES
from benchmarks.workloads import Workload, host_random, to_device, transformer, tree_nbytes

SCHEMA_VERSION = 1
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
# quantize_state's default: buffers with fewer elements stay float32.
MIN_QUANTIZED_SIZE = 4096
REFERENCE = "optkit adamw"


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimizer under test: ``build()`` returns the transform, ``library`` its apply."""

    name: str
    library: str
    build: Callable[[], Any]
    description: str


def _optax_adamw() -> Any:
    import optax

    return optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)


def _optkit_adamw(bits: int = 32) -> Any:
    import optkit

    tx = optkit.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    return tx if bits == 32 else optkit.quantize_state(tx, bits=bits)


CONFIGS: dict[str, Config] = {
    config.name: config
    for config in (
        Config(
            "optax adamw",
            "optax",
            _optax_adamw,
            "optax.adamw(1e-3, weight_decay=1e-2): float32 mu and nu",
        ),
        Config(
            REFERENCE,
            "optkit",
            _optkit_adamw,
            "optkit.adamw(1e-3, weight_decay=1e-2): float32 exp_avg and exp_avg_sq",
        ),
        Config(
            "optkit adamw 8-bit",
            "optkit",
            lambda: _optkit_adamw(8),
            "optkit.quantize_state(optkit.adamw(...), bits=8): blocks of 256, min_size 4096",
        ),
        Config(
            "optkit adamw 4-bit",
            "optkit",
            lambda: _optkit_adamw(4),
            "optkit.quantize_state(optkit.adamw(...), bits=4): blocks of 128, min_size 4096",
        ),
    )
}


def apply_updates(library: str) -> Callable[[Any, Any], Any]:
    if library == "optax":
        import optax

        return optax.apply_updates
    import optkit

    return optkit.apply_updates


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--out", type=Path, help="output folder (default benchmarks/results/memory-<backend>)")
    add("--device", choices=("auto", "cpu", "gpu"), default="auto", help="platform to run on")
    add("--quick", action="store_true", help="tiny transformer and few samples, for smoke tests")
    add("--layers", type=int, help="transformer depth (default 12)")
    add("--width", type=int, help="transformer width (default 768)")
    add("--vocab", type=int, help="vocabulary (default 32000)")
    add("--seq-len", type=int, help="position-embedding rows (default 1024)")
    add("--rounds", type=int, help="alternating rounds over the optimizers (default 5)")
    add("--samples-per-round", type=int, help="timed samples per optimizer per round (default 3)")
    add("--warmup", type=int, help="untimed steps per optimizer before timing (default 2)")
    add("--min-sample-seconds", type=float, help="steps per sample grow to last this long (0.05)")
    add("--zero-devices", type=int, default=8, help="simulated CPU devices for ZeRO-1 (8)")
    add("--no-zero", action="store_true", help="skip the ZeRO-1 subprocess")
    add("--zero-timeout", type=float, default=600.0, help="seconds the ZeRO-1 subprocess may take")
    add("--torch", action="store_true", help="also time torch's and torchao's AdamW (CPU)")
    add("--seed", type=int, default=0)
    add("--no-plot", action="store_true", help="write no PNG")
    add("--figure", type=Path, help="also write the PNG here (the docs figure)")
    args = parser.parse_args(argv)
    if args.device != "auto":
        # Before anything asks for a device: the platform cannot change once backends start.
        jax.config.update("jax_platforms", {"cpu": "cpu", "gpu": "cuda"}[args.device])
    defaults = {
        # The ~110M-parameter tree on every backend: the figures are per parameter or ratios,
        # and on a GPU the whole run (compiles included) then takes a couple of minutes.
        **TRANSFORMER_SIZES["cpu"],
        "rounds": 5,
        "samples_per_round": 3,
        "warmup": 2,
        "min_sample_seconds": 0.05,
    }
    if args.quick:
        defaults.update({key: QUICK[key] for key in ("layers", "width", "vocab", "seq_len")})
        defaults.update(rounds=2, samples_per_round=2, warmup=1, min_sample_seconds=0.002)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.torch and jax.default_backend() != "cpu":
        parser.error("--torch compares CPU steps: torch here is the CPU build (use --device cpu)")
    if args.out is None:
        args.out = Path("benchmarks/results") / f"memory-{jax.default_backend()}"
    return args


def large_leaves(tree: Any) -> Any:
    """The leaves of ``tree`` that ``quantize_state`` quantizes by default (>= 4096 elements)."""
    return jax.tree.map(
        lambda leaf: leaf if math.prod(leaf.shape) >= MIN_QUANTIZED_SIZE else None, tree
    )


def state_bytes(tx: Any, tree: Any, num_params: int) -> dict[str, Any]:
    """The state's bytes from ``jax.eval_shape(tx.init)`` (nothing allocated), per parameter."""
    state = jax.eval_shape(tx.init, tree)
    total = tree_nbytes(state)
    large = large_leaves(tree)
    large_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(large))
    large_total = tree_nbytes(jax.eval_shape(tx.init, large))
    return {
        "bytes": total,
        "bytes_per_param": total / num_params,
        "leaves": len(jax.tree.leaves(state)),
        "large_leaf_params": large_params,
        "large_leaf_bytes": large_total,
        "large_leaf_bytes_per_param": large_total / large_params if large_params else None,
    }


class Timed:
    """Something timed in :func:`time_in_rounds`: ``run(steps)`` returns seconds per step,
    ``release()`` frees its arrays; samples and the summary land in ``record``."""

    record: dict[str, Any]
    steps_per_sample: int = 1

    def run(self, steps: int) -> float:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def warm_up(self, steps: int, min_sample_s: float) -> None:
        warm = [self.run(1) for _ in range(max(steps, 1))]
        self.record["warmup_s"] = warm
        self.steps_per_sample = measure.steps_per_sample(min(warm), min_sample_s)
        self.record["steps_per_sample"] = self.steps_per_sample

    def sample(self, count: int) -> None:
        self.record["samples_s"] += [self.run(self.steps_per_sample) for _ in range(count)]

    def finish(self) -> dict[str, Any]:
        self.release()
        self.record["step"] = measure.summarize(self.record["samples_s"])
        return self.record


class Subject(Timed):
    """One optimizer's compiled step and live arrays, timed in rounds beside the others."""

    def __init__(self, config: Config, workload: Workload, host_params: Any, data: Any) -> None:
        self.config = config
        tx = config.build()
        self.record: dict[str, Any] = {
            "library": config.library,
            "description": config.description,
            "state": state_bytes(tx, workload.tree, workload.num_params),
            "samples_s": [],
        }
        start = time.perf_counter()
        compiled = measure.compile_train_step(tx, apply_updates(config.library), workload.tree)
        self.record["lower_s"], self.record["compile_s"] = compiled.lower_s, compiled.compile_s
        self.record["init_and_step_compile_wall_s"] = time.perf_counter() - start
        self.record["xla_memory"] = measure.memory_analysis(compiled.executable)
        device = jax.devices()[0]
        before = measure.device_memory(device)
        params = to_device(host_params)
        after_params = measure.device_memory(device)
        state = jax.block_until_ready(jax.jit(tx.init)(params))
        live = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
        if live != self.record["state"]["bytes"]:
            raise AssertionError(f"{config.name}: live state {live} B != eval_shape's")
        self.record["memory"] = {
            "live_state_bytes": live,
            "live_params_bytes": sum(leaf.nbytes for leaf in jax.tree.leaves(params)),
            "device_before": before,
            "device_after_params": after_params,
            "device_after_init": measure.device_memory(device),
        }
        self.runner = measure.Runner(compiled.executable, (params, state), (data,))

    def run(self, steps: int) -> float:
        return self.runner.run(steps)

    def release(self) -> None:
        self.runner.release()

    def warm_up(self, steps: int, min_sample_s: float) -> None:
        super().warm_up(steps, min_sample_s)
        self.record["memory"]["device_after_warmup"] = measure.device_memory(jax.devices()[0])


def time_in_rounds(subjects: list[Timed], args: argparse.Namespace, log: Log) -> None:
    """Samples in alternating rounds (the order rotates each round) so load drifts hit all."""
    for subject in subjects:
        subject.warm_up(args.warmup, args.min_sample_seconds)
    for round_index in range(args.rounds):
        shift = round_index % len(subjects)
        order = subjects[shift:] + subjects[:shift]
        if round_index % 2:
            order = order[::-1]
        for subject in order:
            subject.sample(args.samples_per_round)
        log(f"round {round_index + 1}/{args.rounds} done")


def torch_reference_subjects(host_params: Any, host_data: Any, log: Log) -> list[Timed]:
    """The ``--torch`` subjects (``benchmarks.memory_torch``) on the same params and data.

    torch's OpenMP threads would otherwise spin, busy, for a while after each of its parallel
    regions, on the cores the next subject (JAX's) runs on: before torch is imported they are
    told to sleep instead (``OMP_WAIT_POLICY=PASSIVE``, unless the environment says otherwise).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks import memory_torch

    subjects = []
    for config in memory_torch.CONFIGS.values():
        log(f"{config.name}: allocate, first step")
        subjects.append(memory_torch.TorchSubject(config, host_params, host_data))
    return subjects


def torch_results(subjects: list[Any], optkit_records: dict[str, Any]) -> dict[str, Any]:
    """The torch subjects' records, each step's median as a ratio to torch's fused AdamW and
    to optkit's float32 AdamW (measured in the same rounds), and the versions used."""
    import torch
    import torchao

    from benchmarks import memory_torch

    records = {subject.config.name: subject.finish() for subject in subjects}
    torch_reference = records[memory_torch.REFERENCE]["step"]["median"]
    optkit_reference = optkit_records[REFERENCE]["step"]["median"]
    for record in records.values():
        record["step_ratio_to_torch_reference"] = record["step"]["median"] / torch_reference
        record["step_ratio_to_reference"] = record["step"]["median"] / optkit_reference
    return {
        "reference": memory_torch.REFERENCE,
        "versions": {"torch": torch.__version__, "torchao": torchao.__version__},
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "optimizers": records,
    }


def run_zero(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    """``benchmarks.memory_zero`` in a subprocess with ``--zero-devices`` simulated CPU devices."""
    out = args.out / "zero.json.tmp"
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory_zero",
        f"--devices={args.zero_devices}",
        f"--layers={args.layers}",
        f"--width={args.width}",
        f"--vocab={args.vocab}",
        f"--seq-len={args.seq_len}",
        f"--out={out}",
    ]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.zero_devices}",
    }
    log(f"ZeRO-1 subprocess: {shlex.join(command[1:])}")
    completed = subprocess.run(
        command,
        env=env,
        cwd=machine.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=args.zero_timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"ZeRO-1 subprocess failed:\n{completed.stderr[-4000:]}")
    results = json.loads(out.read_text())
    out.unlink()
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results also written to ``--out``/results.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    log = Log()
    measure.disable_compilation_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    workload = transformer(args.layers, args.width, args.vocab, args.seq_len)
    log(f"{workload.name}: {workload.description}, {workload.num_leaves} leaves")
    description = machine.describe(argv)
    description["command"] = shlex.join(["python", "-m", "benchmarks.memory", *argv])
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "machine": description,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": workload.summary(),
        "reference": REFERENCE,
        "optimizers": {},
    }
    host_params = host_random(workload.tree, args.seed)
    host_data = host_random(workload.tree, args.seed + 1)
    data = to_device(host_data)
    subjects: list[Timed] = []
    for config in CONFIGS.values():
        log(f"{config.name}: compile, allocate, init")
        subjects.append(Subject(config, workload, host_params, data))
    torch_subjects = torch_reference_subjects(host_params, host_data, log) if args.torch else []
    time_in_rounds(subjects + torch_subjects, args, log)
    for subject in subjects:
        results["optimizers"][subject.config.name] = subject.finish()
    if torch_subjects:
        results["torch"] = torch_results(torch_subjects, results["optimizers"])
    del subjects, torch_subjects, data, host_data, host_params
    gc.collect()
    reference = results["optimizers"][REFERENCE]["step"]["median"]
    for record in results["optimizers"].values():
        record["step_ratio_to_reference"] = record["step"]["median"] / reference
        samples = np.asarray(record["samples_s"])
        record["step_ratio_to_reference_iqr"] = list(np.percentile(samples, [25, 75]) / reference)
    write_json(args.out / "results.json", results)
    if not args.no_zero:
        results["zero"] = run_zero(args, log)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["machine"]["wall_seconds"] = time.perf_counter() - log.start
    write_json(args.out / "results.json", results)
    memory_report.write_markdown(results, args.out / "results.md")
    if not args.no_plot:
        memory_report.write_plot(results, args.out / "results.png")
        if args.figure is not None:
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.out / "results.png", args.figure)
    log(f"wrote {args.out}/results.json, results.md{'' if args.no_plot else ', results.png'}")
    return results


if __name__ == "__main__":
    main()
