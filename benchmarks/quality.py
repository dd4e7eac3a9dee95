"""Training quality with 8-bit and 4-bit AdamW state against float32, on two small models.

    python -m benchmarks.quality --out benchmarks/results/quality      # ~15 minutes on 2 busy cores
    python -m benchmarks.quality --out benchmarks/results/quality \\
        --figure docs/images/quantized_state_quality.png                # also the docs figure
    python -m benchmarks.quality --quick --out /tmp/optkit-quality     # a few steps, for tests

Runs ``examples/train_digits.py`` (the digits MLP, AdamW in two param groups, cosine schedule) and
``examples/synthetic_lm.py`` (a 2-layer transformer language model on synthetic Markov text) with
``--state-bits 32``, ``8``, ``8 --zero-free`` and ``4``, same seeds (same init, batches and
schedule): only the optimizer state's storage differs. ``--min-size`` is passed explicitly so that
each model's weight matrices are quantized: 1024 for the language model (the default, 4096, would
leave both embeddings in float32), 4096 for the MLP (its two hidden kernels, 94% of the parameters;
its 128 x 10 output kernel stays float32, because quantized at 8 bits, with torchao's rounding, it
makes the run diverge at the example's learning rate, see ``examples/train_digits.py``; a third
task runs the MLP with 1024, output kernel quantized, to measure that). Biases and layer norms stay
float32. A float32 run with the next seed (another init and batch order, the same
data) gives the seed-to-seed spread that the 1% target is read against, and three float32 runs with
0.1% random noise on every update element (smaller than 8-bit rounding) show how far the final loss
moves under a perturbation of known size. Both digits MLP tasks also run float32, 8-bit and 8-bit
``zero_free`` at 19 more seeds (paired: same init, split and batches within a pair): how many 8-bit
runs diverge, and over the others the mean of the paired relative differences, with its standard
error and 95% interval, for the final training loss and for the held-out test loss.

Writes ``results.json`` (every run's metrics and loss curve), ``results.md`` and
``results.png`` under ``--out``, and the PNG also to ``--figure`` when given: the docs figure
is only rewritten on request.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine

SCHEMA_VERSION = 1
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # key in results: (label, the example's arguments)
    "32": ("float32", ("--state-bits", "32")),
    "8": ("8-bit", ("--state-bits", "8")),
    "8z": ("8-bit zero_free", ("--state-bits", "8", "--zero-free")),
    "4": ("4-bit", ("--state-bits", "4")),
}
"""The state formats compared: float32, quantize_state at 8 bits (torchao's rounding), at 8
bits with ``zero_free=True`` (no positive second moment stored as zero) and at 4 bits."""
PAIRED_VARIANTS = ("8", "8z")  # run beside float32 at every seed of a task with seeds > 1
TARGET = 0.01  # 8-bit's final loss within 1% of float32's
EXAMPLES = machine.REPO_ROOT / "examples"


def _digits_params(example: ModuleType) -> Any:
    return example.MLP().init(jax.random.key(0), jnp.zeros((1, 64)))["params"]


def _lm_params(example: ModuleType) -> Any:
    tokens = jnp.zeros((1, example.SEQ_LEN), jnp.int32)
    return example.Decoder().init(jax.random.key(0), tokens)["params"]


@dataclasses.dataclass(frozen=True)
class Task:
    """One model: its example script, the final loss compared, and quantize_state's min_size;
    ``seeds`` float32/8-bit pairs are run (seed, seed + 1, ...), comparing ``metric`` and
    ``also_metric`` (when given) pair by pair."""

    example: str
    metric: str
    min_size: int
    quick_args: tuple[str, ...]
    init_params: Callable[[ModuleType], Any]
    seeds: int = 1
    also_metric: str | None = None
    # With --quick (the 4-bit path compiles in the memory benchmark's smoke test).
    quick_variants: tuple[str, ...] = ("32", "8")


TASKS = {
    "digits MLP": Task(
        "train_digits",
        "final_train_loss",
        4096,
        ("--epochs", "1"),
        _digits_params,
        seeds=20,
        also_metric="test_loss",
    ),
    # The output kernel quantized too: with torchao's rounding most seeds diverge.
    "digits MLP, min_size 1024": Task(
        "train_digits",
        "final_train_loss",
        1024,
        ("--epochs", "1"),
        _digits_params,
        seeds=20,
        also_metric="test_loss",
        quick_variants=("32", "8z"),  # torchao's rounding diverges within the quick epoch
    ),
    "synthetic-text LM": Task(
        "synthetic_lm", "final_eval_loss", 1024, ("--steps", "3"), _lm_params
    ),
}
UPDATE_NOISE = 1e-3
"""The noise-floor runs: float32 AdamW whose every update element is multiplied by
``1 + UPDATE_NOISE * N(0, 1)``, a perturbation smaller than 8-bit state's rounding (which
moves a moment by up to a few percent of its value)."""
NOISE_RUNS = 3
LOSS_LABELS = {
    "final_train_loss": "cross-entropy over the whole training set after the last epoch",
    "final_eval_loss": "next-token cross-entropy on 256 held-out sequences after the last step",
    "test_loss": "cross-entropy on the held-out quarter of the digits after the last epoch",
}


def scale_by_noise(relative: float, seed: int) -> Any:
    """Multiply each update element by ``1 + relative * N(0, 1)`` (a key in the state)."""
    import optkit

    def init(params: Any) -> jax.Array:
        return jax.random.key(seed)

    def update(updates: Any, key: jax.Array, params: Any = None, **extra: Any) -> Any:
        key, step_key = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(step_key, len(leaves))
        noisy = [
            leaf * (1 + relative * jax.random.normal(k, leaf.shape, leaf.dtype))
            for leaf, k in zip(leaves, keys, strict=True)
        ]
        return treedef.unflatten(noisy), key

    return optkit.GradientTransformation(init, update)


def run_with_update_noise(
    example: ModuleType, argv: list[str], relative: float, seed: int
) -> dict[str, Any]:
    """``example.main(argv)`` with :func:`scale_by_noise` chained after its optimizer."""
    import optkit

    make = example.make_optimizer

    def noisy(*args: Any, **kwargs: Any) -> Any:
        return optkit.chain(make(*args, **kwargs), scale_by_noise(relative, seed))

    example.make_optimizer = noisy
    try:
        return example.main(argv)
    finally:
        example.make_optimizer = make


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (a script, not a package); Flax needs it in sys.modules."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    parser.add_argument("--figure", type=Path, help="also write the PNG here (the docs figure)")
    parser.add_argument("--quick", action="store_true", help="a few steps per run, for tests")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def compare(runs: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """Each quantized run's final loss relative to the float32 run's."""
    reference = runs["32"][metric]
    return {
        bits: {
            "final_loss": runs[bits][metric],
            "relative_difference": (runs[bits][metric] - reference) / reference,
        }
        for bits in runs
    }


def _loss(comparison: dict[str, Any], bits: str) -> str:
    if bits not in comparison:
        return "–"
    loss = comparison[bits]["final_loss"]
    return f"{loss:.5f}" if math.isfinite(loss) else f"{loss} (diverged)"


def _difference(comparison: dict[str, Any], bits: str) -> str:
    if bits not in comparison:
        return "–"
    relative = comparison[bits]["relative_difference"]
    if not math.isfinite(relative):
        return "diverged"
    if bits not in PAIRED_VARIANTS:
        return f"{relative:+.2%}"
    return f"{relative:+.2%} ({'met' if abs(relative) <= TARGET else 'missed'})"


def _also(entry: dict[str, Any]) -> str:
    """What else the runs tell: test accuracy (digits) or the best achievable loss (LM)."""
    runs = entry["runs"]
    if all("test_accuracy" in run for run in runs.values()):
        accuracies = " / ".join(f"{run['test_accuracy']:.1%}" for run in runs.values())
        return f"test accuracy {accuracies}"
    if all("entropy_rate" in run for run in runs.values()):
        return f"entropy rate (best loss) {next(iter(runs.values()))['entropy_rate']:.4f}"
    return "–"


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Training quality: 8-bit and 4-bit AdamW state against float32",
        "",
        f"- date: {m['date']}; command: `{m['command']}`",
        f"- machine: {m['cpu_model']}, {m['cpu_cores_available']} cores; {m['backend']}; "
        f"versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- git: {m['git_commit']}{' (dirty)' if m.get('git_dirty') else ''}",
        f"- `quantize_state(adamw, bits=b, min_size=...)` (min_size per task below; "
        "`zero_free=True` where named), same seeds for every run; target: 8-bit final loss "
        f"within {TARGET:.0%} of float32's. The column after the differences is float32 with "
        "the next seed: the seed-to-seed spread of the same loss.",
        "",
    ]
    variants = [v for v in VARIANTS if any(v in e["runs"] for e in results["tasks"].values())]
    quantized = [v for v in variants if v != "32"]
    lines += [
        "| task | final loss | "
        + " | ".join(VARIANTS[v][0] for v in variants)
        + " | "
        + " | ".join(f"{VARIANTS[v][0]} vs float32" for v in quantized)
        + " | float32, next seed | also |",
        "| --- | --- | " + "--- | " * (len(variants) + len(quantized)) + "--- | --- |",
    ]
    for task, entry in results["tasks"].items():
        c = entry["comparison"]
        spread = entry.get("float32_next_seed")
        spread_cell = "–" if spread is None else f"{spread['relative_difference']:+.2%}"
        cells = [_loss(c, v) for v in variants] + [_difference(c, v) for v in quantized]
        lines.append(
            f"| {task} | {LOSS_LABELS[entry['metric']]} | {' | '.join(cells)} | {spread_cell} | "
            f"{_also(entry)} |"
        )
    lines += [
        "",
        "How far the final loss moves without quantization: float32 with the next seed, and "
        f"float32 with every update element multiplied by `1 + {UPDATE_NOISE:g} * N(0, 1)` "
        f"({NOISE_RUNS} noise seeds; a perturbation smaller than 8-bit rounding).",
        "",
        "| task | float32, next seed | float32 + update noise |",
        "| --- | --- | --- |",
    ]
    paired: list[tuple[str, str, str, dict[str, Any]]] = []
    for task, entry in results["tasks"].items():
        if "float32_update_noise" not in entry:
            continue
        noise = entry["float32_update_noise"]["relative_differences"]
        lines.append(
            f"| {task} | {entry['float32_next_seed']['relative_difference']:+.2%} | "
            f"{', '.join(f'{d:+.2%}' for d in noise)} |"
        )
        seeds = entry.get("seeds", {})
        paired += [
            (task, variant, name, seeds[variant][name])
            for variant in PAIRED_VARIANTS
            if variant in seeds
            for name in LOSS_LABELS
            if name in seeds[variant]
        ]
    if paired:
        lines += [
            "",
            "Quantized against float32 over seeds, pair by pair (same init, split and batches "
            f"within a pair). A run whose final loss is over {DIVERGED:g} times float32's counts "
            "as diverged; over the others: the mean of the relative differences, its standard "
            "error and 95% t-interval, the median, the smallest and largest difference. Last, "
            "float32's own seed-to-seed spread (standard deviation over mean).",
            "",
            "| task | state | loss | pairs | diverged | mean difference | standard error "
            "| 95% interval | median | range | float32 seed-to-seed std |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for task, variant, name, pairs in paired:
            low, high = pairs["interval_95"]
            kept = [
                d for i, d in enumerate(pairs["relative_differences"]) if i not in pairs["diverged"]
            ]
            lines.append(
                f"| {task} | {VARIANTS[variant][0]} | {name} | "
                f"{len(pairs['relative_differences'])} | {len(pairs['diverged'])} | "
                f"{pairs['mean_relative_difference']:+.2%} | {pairs['standard_error']:.2%} | "
                f"{low:+.2%} to {high:+.2%} | {pairs['median_relative_difference']:+.2%} | "
                f"{min(kept):+.1%} to {max(kept):+.1%} | {pairs['float32_relative_std']:.1%} |"
            )
    lines += [
        "",
        "| task | min_size | quantized leaves | steps | seconds per run "
        f"({', '.join(VARIANTS[v][0] for v in variants)}) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, entry in results["tasks"].items():
        runs = entry["runs"].values()
        seconds = ", ".join(f"{run['seconds']:.0f}" for run in runs)
        lines.append(
            f"| {task} | {entry['min_size']} | {entry['quantized_leaves']} | "
            f"{next(iter(runs))['steps']} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def smoothed(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    figure, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6))
    styles = {"32": ("#1f77b4", "-"), "8": ("#ff7f0e", "--"), "8z": ("#d62728", "-.")}
    styles["4"] = ("#2ca02c", ":")
    for axis, (task, entry) in zip(np.atleast_1d(axes), tasks.items(), strict=True):
        for bits, run in entry["runs"].items():
            label = VARIANTS[bits][0]
            color, linestyle = styles[bits]
            curve = smoothed(run["minibatch_losses"], 20)
            final = entry["comparison"][bits]["final_loss"]
            axis.plot(
                np.arange(len(curve)) + len(run["minibatch_losses"]) - len(curve),
                curve,
                color=color,
                linestyle=linestyle,
                linewidth=1.6,
                label=f"{label}: final {final:.4g}"
                if math.isfinite(final)
                else f"{label}: diverged",
            )
        axis.set(yscale="log", xlabel="step", ylabel="minibatch loss (20-step mean, log)")
        axis.set_title(
            f"{task} (min_size {entry['min_size']}: {entry['quantized_leaves']})", fontsize=10
        )
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(title="AdamW state (final loss)")
    figure.suptitle(
        "AdamW with float32, 8-bit (also zero_free) and 4-bit state (optkit.quantize_state): "
        "same seeds, "
        f"{results['machine']['date'][:10]}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    description = machine.describe(argv)
    description["command"] = shlex.join(["python", "-m", "benchmarks.quality", *argv])
    start = time.perf_counter()
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "machine": description,
        "target_relative_difference": TARGET,
        "tasks": {},
    }
    for name, task in TASKS.items():
        example = load_example(task.example)
        runs = {}
        common = ["--min-size", str(task.min_size), *(task.quick_args if args.quick else ())]
        for variant in task.quick_variants if args.quick else VARIANTS:
            run_args = ["--seed", str(args.seed), *VARIANTS[variant][1], *common]
            print(f"{name}: {shlex.join(run_args)}", file=sys.stderr, flush=True)
            runs[variant] = example.main(run_args)
        results["tasks"][name] = {
            "example": f"examples/{task.example}.py",
            "metric": task.metric,
            "min_size": task.min_size,
            "quantized_leaves": quantized_leaf_summary(
                jax.eval_shape(functools.partial(task.init_params, example)), task.min_size
            ),
            "runs": runs,
            "comparison": compare(runs, task.metric),
        }
        if not args.quick:
            results["tasks"][name].update(sensitivity(example, task, args.seed, runs, common))
    results["machine"]["wall_seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render_markdown(results))
    write_plot(results, args.out / "results.png")
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "results.png", args.figure)
    print(render_markdown(results))
    return results


def sensitivity(
    example: ModuleType,
    task: Task,
    seed: int,
    runs: dict[str, dict[str, Any]],
    common: list[str],
) -> dict[str, Any]:
    """How much the final loss moves without quantization: float32 with the next seed, and
    float32 with :data:`UPDATE_NOISE` on every update (:data:`NOISE_RUNS` noise seeds); and,
    for a task with ``seeds > 1``, the 8-bit against float32 difference at every seed."""
    metric = task.metric
    reference = runs["32"][metric]

    def relative(value: float, to: float = reference) -> float:
        return (value - to) / to

    pairs = [(seed, {variant: runs[variant] for variant in ("32", *PAIRED_VARIANTS)})]
    for other in range(seed + 1, seed + max(task.seeds, 2)):
        base = ["--seed", str(other), *common]
        variants = ("32", *PAIRED_VARIANTS) if task.seeds > 1 else ("32",)
        print(f"{task.example}: seed {other}, {', '.join(variants)}", file=sys.stderr, flush=True)
        pairs.append((other, {v: example.main([*base, *VARIANTS[v][1]]) for v in variants}))
    noise = []
    for noise_seed in range(NOISE_RUNS):
        print(f"{task.example}: float32, update noise {noise_seed}", file=sys.stderr, flush=True)
        argv = ["--seed", str(seed), "--state-bits", "32", *common]
        noise.append(run_with_update_noise(example, argv, UPDATE_NOISE, noise_seed)[metric])
    out: dict[str, Any] = {
        "float32_next_seed": {
            "seed": pairs[1][0],
            "final_loss": pairs[1][1]["32"][metric],
            "relative_difference": relative(pairs[1][1]["32"][metric]),
        },
        "float32_update_noise": {
            "relative_noise": UPDATE_NOISE,
            "final_losses": noise,
            "relative_differences": [relative(value) for value in noise],
        },
    }
    if task.seeds > 1:
        out["seeds"] = {"seeds": [s for s, _ in pairs]}
        for variant in PAIRED_VARIANTS:
            out["seeds"][variant] = {
                name: paired_differences(
                    [runs["32"][name] for _, runs in pairs],
                    [runs[variant][name] for _, runs in pairs],
                )
                for name in (metric, task.also_metric)
                if name is not None
            }
    return out


DIVERGED = 10.0
"""A quantized run whose final loss is over ``DIVERGED`` times float32's (or not finite) at the
same seed counts as diverged, and is left out of the mean of the differences."""


def paired_differences(float32s: Sequence[float], quantized: Sequence[float]) -> dict[str, Any]:
    """A quantized state against float32 over seeds: each pair's relative difference; the
    pairs whose quantized run diverged (see :data:`DIVERGED`); and over the others, the mean
    difference with its standard error and 95% t-interval, and the median; and the float32
    losses' own seed-to-seed spread."""
    from scipy import stats

    differences = [(q - f) / f for f, q in zip(float32s, quantized, strict=True)]
    diverged = [
        i
        for i, (f, q) in enumerate(zip(float32s, quantized, strict=True))
        if not math.isfinite(q) or q > DIVERGED * f
    ]
    kept = [d for i, d in enumerate(differences) if i not in diverged]
    count = len(kept)
    mean = float(np.mean(kept))
    standard_error = float(np.std(kept, ddof=1) / math.sqrt(count))
    half_width = float(stats.t.ppf(0.975, count - 1)) * standard_error
    return {
        "float32": list(float32s),
        "quantized": list(quantized),
        "relative_differences": differences,
        "diverged": diverged,
        "mean_relative_difference": mean,
        "standard_error": standard_error,
        "interval_95": [mean - half_width, mean + half_width],
        "median_relative_difference": float(np.median(kept)),
        "float32_relative_std": float(np.std(float32s, ddof=1) / np.mean(float32s)),
    }


def quantized_leaf_summary(params: Any, min_size: int) -> str:
    """How many of the model's leaves have at least ``min_size`` elements (are quantized)."""
    sizes = [math.prod(leaf.shape) for leaf in jax.tree.leaves(params)]
    # Blocks run over the flattened buffer: 256 (8-bit) and 128 (4-bit) must divide its size.
    large = [size for size in sizes if size >= min_size and size % 256 == 0]
    return f"{len(large)} of {len(sizes)} leaves, {sum(large):,} of {sum(sizes):,} params"


if __name__ == "__main__":
    main()
