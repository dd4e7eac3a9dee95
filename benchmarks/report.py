"""Render a results.json as a markdown report and a PNG of the ratios and compile-time trend.

python -m benchmarks.report benchmarks/results/cpu    # re-render from results.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Kept in step with benchmarks/pairs.py (not imported: rendering needs neither optax nor optkit).
OPTKIT_PATHS = ("optkit", "optkit.flatten")
LIBRARIES = (*OPTKIT_PATHS, "optax")


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` atomically (a temporary file, then a rename), so a reader
    never sees a half-written file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
    tmp.replace(path)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f}"


def _seconds(summary: dict[str, Any]) -> str:
    return f"{_num(summary['median'])} (n={summary['n']})"


def _step_ms(summary: dict[str, Any]) -> str:
    return f"{_num(summary['median'] * 1e3)} [IQR {_num(summary['iqr'] * 1e3, 2)}]"


def _device_delta(record: dict[str, Any]) -> float | None:
    memory = record["memory"]
    before, after = memory.get("device_before"), memory.get("device_after")
    if not before or not after or "bytes_in_use" not in before:
        return None
    return after["bytes_in_use"] - before["bytes_in_use"]


def _bandwidth(record: dict[str, Any]) -> str:
    roof = record.get("roofline_ratio_flat")
    share = "" if roof is None else f" ({roof:.0%} of copy)"
    return f"{record['bandwidth_bytes_per_s'] / 1e9:.2f}{share}"


# (label, cell for one library, number for the optkit/optax ratio)
ROWS: list[tuple[str, Callable[[dict], str], Callable[[dict], float | None]]] = [
    ("trace+lower, s", lambda r: _seconds(r["lower"]), lambda r: r["lower"]["median"]),
    ("compile, s", lambda r: _seconds(r["compile"]), lambda r: r["compile"]["median"]),
    (
        "jit(init) lower+compile, s",
        lambda r: _num(r["init_lower_s"] + r["init_compile_s"]),
        lambda r: r["init_lower_s"] + r["init_compile_s"],
    ),
    ("step, ms", lambda r: _step_ms(r["step"]), lambda r: r["step"]["median"]),
    (
        "state bytes/param",
        lambda r: _num(r["state"]["bytes_per_param"], 4),
        lambda r: r["state"]["bytes"],
    ),
    (
        "XLA peak, MiB",
        lambda r: _mb(r["xla_memory"]["peak_bytes"]),
        lambda r: r["xla_memory"]["peak_bytes"],
    ),
    (
        "RSS peak delta, MiB",
        lambda r: _mb(r["memory"]["rss_peak_delta_bytes"]),
        lambda r: r["memory"]["rss_peak_delta_bytes"],
    ),
    ("device bytes delta, MiB", lambda r: _mb(_device_delta(r)), _device_delta),
    ("bandwidth, GB/s", _bandwidth, lambda r: r["bandwidth_bytes_per_s"]),
    (
        "StableHLO lines/leaf",
        lambda r: _num(r["program"]["stablehlo_lines_per_leaf"], 4),
        lambda r: r["program"]["stablehlo_lines"],
    ),
]


def _ratio_cell(mine: float | None, theirs: float | None) -> str:
    if mine is None or not theirs:
        return "–"
    return f"{mine / theirs:.2f}"


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items())
    load = m.get("load_average_at_start")
    load_end = m.get("load_average_at_end")
    wall = m.get("wall_seconds")
    lines = [
        f"- date: {m['date']}; command: `{m['command']}`",
        f"- device: {m['backend']} ({m['device_kind']}, {m['device_count']} device(s))",
        f"- CPU: {m['cpu_model']}, {m['cpu_cores_available']} cores available "
        f"({m['cpu_cores_logical']} logical), RAM {m['ram_bytes'] / 2**30:.0f} GiB",
        f"- versions: {versions}; git {m.get('git_commit') or '?'}"
        f"{' (dirty)' if m.get('git_dirty') else ''}",
    ]
    if load is not None:
        end = "" if load_end is None else f", at end {load_end[0]:.2f}"
        lines.append(f"- load average (1 min) at start {load[0]:.2f}{end}")
    if wall is not None:
        lines.append(f"- wall time {wall / 60:.1f} min")
    return lines


def _summary_table(results: dict[str, Any]) -> list[str]:
    fields = (
        "lower_plus_compile",
        "lower",
        "compile",
        "init_lower_plus_compile",
        "step",
        "state_bytes",
        "xla_peak_bytes",
    )
    lines = [
        "| workload | optimizer | path | lower+compile | floor | lower | compile | jit(init) "
        "| step | state bytes | XLA peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in results["measurements"]:
        head = f"| {entry['workload']} | {entry['optimizer']} |"
        if entry["status"] != "ok":
            lines.append(f"{head} skipped | | | | | | | | |")
            continue
        floor = _num(entry.get("floor", {}).get("over_optax"), 3)
        for path in OPTKIT_PATHS:
            r = entry["ratios"][path]
            cells = [_num(r.get(name), 3) for name in fields]
            cells.insert(1, floor)
            lines.append(f"{head} {path} |" + "".join(f" {cell} |" for cell in cells))
    return lines


def _copy_line(copies: dict[str, Any]) -> str:
    parts = []
    for kind, label in (("flat", "one flat array"), ("tree", "same tree")):
        copy = copies.get(kind)
        if not copy:
            continue
        if copy["status"] != "ok":
            parts.append(f"{label}: skipped ({copy['reason']})")
            continue
        parts.append(
            f"{label} {copy['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s "
            f"({copy['step']['median'] * 1e3:.3g} ms per copy; compile {copy['compile_s']:.2f} s)"
        )
    return "Copy roofline (`x * 1.0`, donated, read + write): " + "; ".join(parts) + "."


def _workload_section(results: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    name = workload["name"]
    lines = [
        f"### {name}",
        "",
        f"{workload['description']}: {workload['num_params']:,} params in "
        f"{workload['num_leaves']:,} leaves ({workload['param_bytes'] / 2**20:,.1f} MiB).",
        "",
    ]
    copies = next((c for c in results["copies"] if c["workload"] == name), None)
    if copies:
        lines += [_copy_line(copies), ""]
    lines += [
        "| optimizer | metric | "
        + " | ".join(LIBRARIES)
        + " | "
        + " | ".join(f"{path}/optax" for path in OPTKIT_PATHS)
        + " |",
        "| --- | --- |" + " --- |" * (len(LIBRARIES) + len(OPTKIT_PATHS)),
    ]
    blank = " |" * (len(LIBRARIES) + len(OPTKIT_PATHS))
    for entry in results["measurements"]:
        if entry["workload"] != name:
            continue
        libs = entry["libraries"]
        if entry["status"] != "ok":
            state = [_num(libs[lib]["state"]["bytes_per_param"], 4) for lib in LIBRARIES]
            lines.append(f"| {entry['optimizer']} | skipped: {entry['reason']} |{blank}")
            lines.append(
                "| | state bytes/param | " + " | ".join(state) + " |" + " |" * len(OPTKIT_PATHS)
            )
            continue
        for index, (label, cell, value) in enumerate(ROWS):
            values = {lib: value(libs[lib]) for lib in LIBRARIES}
            if label.startswith("device") and values["optkit"] is None:
                continue
            optimizer = entry["optimizer"] if index == 0 else ""
            cells = [cell(libs[lib]) for lib in LIBRARIES]
            cells += [_ratio_cell(values[path], values["optax"]) for path in OPTKIT_PATHS]
            lines.append(f"| {optimizer} | {label} | " + " | ".join(cells) + " |")
        floor = entry.get("floor")
        if floor:
            total = floor["lower_plus_compile_median_s"]
            ratio = _num(floor["over_optax"], 3)
            lines.append(
                f"| | floor (`p - lr * g`) lower+compile, s | {_num(total)} |"
                + " |" * (len(LIBRARIES) - 1)
                + f" {ratio} |" * len(OPTKIT_PATHS)
            )
    return [*lines, ""]


def render_markdown(results: dict[str, Any]) -> str:
    pairs = results["pairs"]
    lines = [
        "# optkit vs optax",
        "",
        *_machine_lines(results),
        "",
        "Method: `benchmarks/README.md`. Times are medians; lower/compile are cold (caches "
        "cleared, persistent cache off), repeated with the library order alternating; steps are "
        "timed in alternating rounds. `optkit` is the default per-leaf path, `optkit.flatten` "
        "the opt-in flat path (`optkit.flatten(tx)`). Bandwidth = bytes the update must move / "
        "step time: "
        + "; ".join(
            f"{n} {p['bytes_per_param']} B/param ({p['traffic']})" for n, p in pairs.items()
        )
        + ".",
        "",
        "## optkit / optax, per optkit path (below 1: optkit is faster or smaller)",
        "",
        "`floor` is the lower+compile time of the same train step with the cheapest update "
        "there is (`p - lr * g`, no state), compiled beside each optimizer, divided by optax's: "
        "every optimizer computes those gradients and writes those params, so no optimizer's "
        "lower+compile ratio can be expected below it.",
        "",
        *_summary_table(results),
        "",
        "## Per workload",
        "",
    ]
    for workload in results["workloads"]:
        lines += _workload_section(results, workload)
    lines += ["## Configurations", ""]
    lines += [f"- **{name}**: {p['note']}" for name, p in pairs.items()]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(render_markdown(results))


def _grouped_bars(axis: Any, results: dict[str, Any], ratio: str, title: str) -> None:
    ok = [entry for entry in results["measurements"] if entry["status"] == "ok"]
    workloads = [w["name"] for w in results["workloads"]]
    optimizers = list(results["pairs"])
    bars = [(optimizer, path) for optimizer in optimizers for path in OPTKIT_PATHS]
    width = 0.8 / max(len(bars), 1)
    for index, (optimizer, path) in enumerate(bars):
        xs, heights = [], []
        for entry in ok:
            value = entry["ratios"][path].get(ratio)
            if entry["optimizer"] == optimizer and value is not None:
                xs.append(
                    workloads.index(entry["workload"]) + (index - (len(bars) - 1) / 2) * width
                )
                heights.append(value)
        flat = path != "optkit"
        axis.bar(
            xs,
            heights,
            width=width,
            color=f"C{optimizers.index(optimizer)}",
            alpha=0.55 if flat else 1.0,
            hatch="//" if flat else None,
            label=f"{optimizer} {path}",
        )
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("optkit path / optax")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2)


def _roofline_bars(axis: Any, results: dict[str, Any]) -> None:
    from matplotlib.patches import Patch

    ok = [entry for entry in results["measurements"] if entry["status"] == "ok"]
    workloads = [w["name"] for w in results["workloads"]]
    optimizers = list(results["pairs"])
    bars = [(optimizer, lib) for optimizer in optimizers for lib in LIBRARIES]
    width = 0.8 / max(len(bars), 1)
    handles = []
    for index, (optimizer, lib) in enumerate(bars):
        xs, heights = [], []
        for entry in ok:
            value = entry["libraries"][lib].get("roofline_ratio_flat")
            if entry["optimizer"] == optimizer and value is not None:
                offset = (index - (len(bars) - 1) / 2) * width
                xs.append(workloads.index(entry["workload"]) + offset)
                heights.append(value)
        color = f"C{optimizers.index(optimizer)}"
        hatch = {"optkit": None, "optkit.flatten": "..", "optax": "//"}[lib]
        fill = {"optkit": 1.0, "optkit.flatten": 0.7, "optax": 0.4}[lib]
        axis.bar(xs, heights, width=width, color=color, alpha=fill, hatch=hatch)
        handles.append(Patch(facecolor=color, alpha=fill, hatch=hatch, label=f"{lib} {optimizer}"))
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("effective bandwidth / copy bandwidth")
    axis.set_title("Share of the copy roofline (modelled bytes / step time)")
    axis.legend(handles=handles, fontsize=7, ncol=2)


def _compile_trend(axis: Any, results: dict[str, Any]) -> None:
    ok = [entry for entry in results["measurements"] if entry["status"] == "ok"]
    colors = {name: f"C{index}" for index, name in enumerate(results["pairs"])}
    families = {w["name"]: w["family"] for w in results["workloads"]}
    for optimizer in results["pairs"]:
        for lib, style in zip(LIBRARIES, ("-", "-.", "--"), strict=True):
            points = sorted(
                (entry["num_leaves"], entry["libraries"][lib]["lower_plus_compile_median_s"])
                for entry in ok
                if entry["optimizer"] == optimizer and families[entry["workload"]] != "transformer"
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(
                    xs, ys, style, marker="o", color=colors[optimizer], label=f"{lib} {optimizer}"
                )
            for entry in ok:
                if entry["optimizer"] == optimizer and families[entry["workload"]] == "transformer":
                    seconds = entry["libraries"][lib]["lower_plus_compile_median_s"]
                    marker = {"optkit": "*", "optkit.flatten": "P", "optax": "x"}[lib]
                    axis.plot(
                        entry["num_leaves"], seconds, marker, color=colors[optimizer], markersize=9
                    )
    copies = sorted(
        (len_leaves, c["tree"]["lower_s"] + c["tree"]["compile_s"])
        for c in results["copies"]
        if c.get("tree", {}).get("status") == "ok"
        for len_leaves in [
            next(w["num_leaves"] for w in results["workloads"] if w["name"] == c["workload"])
        ]
        if families[c["workload"]] != "transformer"
    )
    if copies:
        xs, ys = zip(*copies, strict=True)
        axis.plot(xs, ys, ":", color="gray", marker=".", label="tree copy")
    floors: dict[int, list[float]] = {}
    for entry in ok:
        if "floor" in entry and families[entry["workload"]] != "transformer":
            floors.setdefault(entry["num_leaves"], []).append(
                entry["floor"]["lower_plus_compile_median_s"]
            )
    if floors:
        xs = sorted(floors)
        ys = [statistics.median_high(floors[x]) for x in xs]
        axis.plot(xs, ys, "--", color="black", marker="s", label="train step, p - lr*g (floor)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("leaves (transformer: * optkit, P optkit.flatten, x optax)")
    axis.set_ylabel("trace+lower+compile, s")
    axis.set_title("Cold compile time vs leaves")
    axis.grid(True, which="both", alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7, ncol=2)


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    _grouped_bars(axes[0, 0], results, "lower_plus_compile", "trace+lower+compile time ratio")
    _grouped_bars(axes[0, 1], results, "step", "step time ratio")
    _roofline_bars(axes[1, 0], results)
    _compile_trend(axes[1, 1], results)
    m = results["machine"]
    figure.suptitle(f"optkit vs optax on {m['backend']} ({m['device_kind']}), {m['date'][:10]}")
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
