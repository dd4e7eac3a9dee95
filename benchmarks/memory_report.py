"""Render the memory benchmark's results.json as markdown tables and a PNG.

python -m benchmarks.memory_report benchmarks/results/memory-cpu    # re-render from results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The targets, drawn on the plot and checked in the tables.
STATE_TARGETS = {"optkit adamw 8-bit": 2.1, "optkit adamw 4-bit": 1.1}
CPU_STEP_TARGET = 1.5
GPU_STEP_TARGET = 1.2
STEP_TARGET_OF = "optkit adamw 8-bit"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _device_delta(memory: dict[str, Any], key: str) -> float | None:
    before, after = memory.get("device_before"), memory.get(key)
    if not before or not after or "bytes_in_use" not in before:
        return None
    return after["bytes_in_use"] - before["bytes_in_use"]


def step_target(results: dict[str, Any]) -> float:
    return CPU_STEP_TARGET if results["machine"]["backend"] == "cpu" else GPU_STEP_TARGET


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    w = results["workload"]
    load = ", ".join(
        f"{key.removeprefix('load_average_')} {' / '.join(f'{x:.2f}' for x in m[key])}"
        for key in ("load_average_at_start", "load_average_at_end")
        if m.get(key)
    )
    lines = [
        f"# Optimizer-state memory and step time: {m['backend']} ({m['device_kind']})",
        "",
        f"- date: {m['date']}; command: `{m['command']}`",
        f"- machine: {m['cpu_model']}, {m['cpu_cores_available']} cores available "
        f"({m['cpu_cores_logical']} logical), {m['ram_bytes'] / 2**30:.0f} GiB RAM; "
        f"{m['device_count']} x {m['device_kind']}; load average {load}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- git: {m['git_commit']}{' (dirty)' if m.get('git_dirty') else ''}; "
        f"wall time {m.get('wall_seconds', 0):.0f} s",
        f"- workload: {w['name']}, {w['description']}, {w['num_leaves']} leaves",
        "",
        "## State and memory",
        "",
        "Bytes per parameter: the state's arrays over the parameter count, for the whole tree and "
        "for its leaves of at least 4,096 elements (those `quantize_state` quantizes by default; "
        "the rest stay float32). XLA peak: arguments + outputs - donated + temporaries of the "
        "compiled train step (params, state, the data tree and the step's scratch).",
        "",
        "| optimizer | state bytes/param | large leaves, bytes/param | state, MiB "
        "| XLA step peak, MiB | of which temporaries, MiB | device bytes, params + state, MiB "
        "| target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["optimizers"].items():
        state = r["state"]
        target = STATE_TARGETS.get(name)
        verdict = "–"
        if target is not None:
            met = state["large_leaf_bytes_per_param"] <= target
            verdict = f"<= {target} ({'met' if met else 'missed'})"
        lines.append(
            f"| {name} | {state['bytes_per_param']:.4f} | "
            f"{_num(state['large_leaf_bytes_per_param'], 4)} | {_mib(state['bytes'])} | "
            f"{_mib(r['xla_memory'].get('peak_bytes'))} | "
            f"{_mib(r['xla_memory'].get('temp_size'))} | "
            f"{_mib(_device_delta(r['memory'], 'device_after_init'))} | {verdict} |"
        )
    target = step_target(results)
    lines += [
        "",
        "## Step time",
        "",
        f"Median over {results['config']['rounds']} alternating rounds of "
        f"{results['config']['samples_per_round']} samples each (IQR in brackets); the ratio is "
        f"to `{results['reference']}` in the same process. Target: 8-bit <= {target}x "
        f"({m['backend']}).",
        "",
        "| optimizer | step, ms | ratio to optkit adamw | ratio IQR | lower + compile, s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results["optimizers"].items():
        step = r["step"]
        low, high = r["step_ratio_to_reference_iqr"]
        ratio = r["step_ratio_to_reference"]
        mark = ""
        if name == STEP_TARGET_OF:
            mark = f" ({'met' if ratio <= target else 'missed'})"
        lines.append(
            f"| {name} | {step['median'] * 1e3:.1f} [{step['iqr'] * 1e3:.1f}] | "
            f"{ratio:.2f}{mark} | {low:.2f}-{high:.2f} | {r['lower_s'] + r['compile_s']:.1f} |"
        )
    if "torch" in results:
        lines += torch_section(results)
    zero = results.get("zero")
    if zero:
        lines += [
            "",
            f"## ZeRO-1 on {zero['devices']} simulated CPU devices",
            "",
            f"`optkit.state_sharding(tx, params, mesh=mesh)` on a `('data',)` mesh of "
            f"{zero['devices']} devices, params replicated; per-device bytes counted from every "
            "leaf's shard shapes and checked equal to the shards `jit(init, out_shardings=...)` "
            "allocates (XLA's output size of that program, in the JSON, adds 8 bytes per buffer "
            "for its tuple table).",
            "",
            f"| optimizer | total state, MiB | per device, MiB | total / {zero['devices']}, MiB "
            "| per device / total | replicated leaves (bytes) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, z in zero["optimizers"].items():
            rep = z["replicated"]
            lines.append(
                f"| {name} | {_mib(z['total_bytes'])} | {_mib(z['per_device_max_bytes'])} | "
                f"{_mib(z['total_over_devices'])} | {z['per_device_over_total']:.4f} | "
                f"{rep['count']} ({rep['bytes']:,} B) |"
            )
    return "\n".join(lines) + "\n"


def torch_section(results: dict[str, Any]) -> list[str]:
    """The ``--torch`` table: torch's and torchao's AdamW timed in the same rounds."""
    torch = results["torch"]
    records = torch["optimizers"]
    versions = ", ".join(f"{k} {v}" for k, v in torch["versions"].items())
    lines = [
        "",
        "## Against torch and torchao",
        "",
        f"The same step on the same tree, timed in the same alternating rounds ({versions}, "
        f"{torch['threads']} threads, `OMP_WAIT_POLICY={torch.get('omp_wait_policy')}`): "
        "`g = p - x`, then the optimizer's step, in place. "
        "torchao compiles each parameter's step with `torch.compile` (C++ on CPU) in its first "
        "step, which is not timed.",
        "",
        f"| optimizer | state bytes/param | step, ms | ratio to {torch['reference']} "
        "| ratio to optkit adamw |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in records.items():
        step = r["step"]
        lines.append(
            f"| {name} | {r['state']['bytes_per_param']:.4f} | "
            f"{step['median'] * 1e3:.1f} [{step['iqr'] * 1e3:.1f}] | "
            f"{r['step_ratio_to_torch_reference']:.2f} | {r['step_ratio_to_reference']:.2f} |"
        )
    optkit = results["optimizers"]
    notes = []
    for bits in (8, 4):
        ours = optkit.get(f"optkit adamw {bits}-bit")
        theirs = records.get(f"torchao adamw {bits}-bit")
        if ours is None or theirs is None:
            continue
        notes.append(
            f"- {bits}-bit over its library's float32 AdamW: optkit "
            f"{ours['step_ratio_to_reference']:.2f}x (over `optkit.adamw`), torchao "
            f"{theirs['step_ratio_to_torch_reference']:.2f}x (over torch's fused AdamW); "
            f"torchao's {bits}-bit step takes "
            f"{theirs['step']['median'] / ours['step']['median']:.1f}x optkit's."
        )
    return lines + (["", *notes] if notes else [])


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(render_markdown(results))


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["optimizers"])
    labels = [name.replace("optkit ", "optkit\n").replace("optax ", "optax\n") for name in names]
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(names)]
    zero = results.get("zero")
    torch = results.get("torch")
    panels = 2 + bool(zero) + bool(torch)
    figure, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 4.8))
    records = results["optimizers"]

    state_axis = axes[0]
    values = [records[name]["state"]["bytes_per_param"] for name in names]
    state_axis.bar(labels, values, color=colors)
    for x, value in enumerate(values):
        state_axis.text(x, value, f"{value:.2f}", ha="center", va="bottom")
    for name, target in STATE_TARGETS.items():
        if name in names:
            x = names.index(name)
            state_axis.plot([x - 0.4, x + 0.4], [target, target], "k--", linewidth=1)
    state_axis.set(ylabel="bytes per parameter", title="Optimizer state (dashed: target)")

    step_axis = axes[1]
    ratios = [records[name]["step_ratio_to_reference"] for name in names]
    quartiles = [records[name]["step_ratio_to_reference_iqr"] for name in names]
    errors = [
        [ratio - low for ratio, (low, _) in zip(ratios, quartiles, strict=True)],
        [high - ratio for ratio, (_, high) in zip(ratios, quartiles, strict=True)],
    ]
    step_axis.bar(labels, ratios, color=colors, yerr=errors, capsize=4)
    for x, value in enumerate(ratios):
        step_axis.text(x + 0.1, value, f"{value:.2f}x", ha="left", va="bottom")
    target = step_target(results)
    step_axis.axhline(target, color="k", linestyle="--", linewidth=1, label=f"{target}x target")
    step_axis.axhline(1.0, color="gray", linewidth=0.8)
    step_axis.legend(loc="upper left")
    step_axis.set(ylabel="step time / optkit adamw", title="Train step time (median, IQR)")

    if zero:
        zero_axis = axes[2]
        zero_names = list(zero["optimizers"])
        zero_labels = [labels[names.index(name)] for name in zero_names]
        totals = [zero["optimizers"][n]["total_bytes"] / 2**20 for n in zero_names]
        shares = [zero["optimizers"][n]["per_device_max_bytes"] / 2**20 for n in zero_names]
        xs = range(len(zero_names))
        zero_axis.bar([x - 0.2 for x in xs], totals, 0.4, label="replicated (each device)")
        zero_axis.bar([x + 0.2 for x in xs], shares, 0.4, label="ZeRO-1 (per device)")
        zero_axis.set_xticks(list(xs), zero_labels)
        zero_axis.set(ylabel="MiB per device", title=f"State per device, {zero['devices']} devices")
        zero_axis.legend()
    if torch:
        torch_axis = axes[-1]
        widths = [bits for bits in (8, 4) if f"torchao adamw {bits}-bit" in torch["optimizers"]]
        ours = [records[f"optkit adamw {bits}-bit"]["step_ratio_to_reference"] for bits in widths]
        theirs = [
            torch["optimizers"][f"torchao adamw {bits}-bit"]["step_ratio_to_torch_reference"]
            for bits in widths
        ]
        xs = range(len(widths))
        for offset, values, label, color in (
            (-0.2, ours, "optkit (over optkit.adamw)", "#ff7f0e"),
            (0.2, theirs, f"torchao (over {torch['reference']})", "#9467bd"),
        ):
            torch_axis.bar([x + offset for x in xs], values, 0.4, label=label, color=color)
            for x, value in zip(xs, values, strict=True):
                torch_axis.text(x + offset, value, f"{value:.1f}x", ha="center", va="bottom")
        torch_axis.set_xticks(list(xs), [f"{bits}-bit AdamW" for bits in widths])
        torch_axis.axhline(1.0, color="gray", linewidth=0.8)
        torch_axis.set(
            ylabel="step time / same library's float32 AdamW",
            title="Quantized step over float32, by library",
        )
        torch_axis.legend(loc="upper left")
    m = results["machine"]
    figure.suptitle(
        f"{results['workload']['description']} on {m['backend']} ({m['device_kind']}), "
        f"{m['date'][:10]}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    results = json.loads((folder / "results.json").read_text())
    write_markdown(results, folder / "results.md")
    write_plot(results, folder / "results.png")


if __name__ == "__main__":
    main()
