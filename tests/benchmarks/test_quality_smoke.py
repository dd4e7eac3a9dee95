"""Smoke test of the training-quality benchmark: a few steps per run, finite losses, the files.

The quick run compares nothing (a few steps say nothing about final quality); it checks that
both examples train with float32 and 8-bit state from the same seeds (the quick run leaves out
4-bit, whose step the memory benchmark's smoke test compiles), that the results
land in results.json and the markdown, that the plot is written, and that the docs figure is
only written when ``--figure`` asks for it.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from benchmarks import quality


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    figure = out / "figure" / "quality.png"
    return out, figure, quality.main(["--quick", f"--out={out}", f"--figure={figure}"])


def test_every_run_trains_with_finite_losses(quick_run):
    _, _, results = quick_run
    assert list(results["tasks"]) == list(quality.TASKS)
    for task, entry in results["tasks"].items():
        assert list(entry["runs"]) == ["32", "8"], task
        steps = {run["steps"] for run in entry["runs"].values()}
        assert len(steps) == 1, task  # the same schedule for every state format
        for bits, run in entry["runs"].items():
            assert run["state_bits"] == int(bits)
            losses = [*run["minibatch_losses"], run[entry["metric"]]]
            assert len(losses) == run["steps"] + 1
            assert all(math.isfinite(loss) for loss in losses), (task, bits)
        # Quantized moments take less memory than float32 ones, in the very state trained with.
        state_bytes = [run["optimizer_state_bytes"] for run in entry["runs"].values()]
        assert state_bytes[0] > 3 * state_bytes[1], task
        comparison = entry["comparison"]
        assert comparison["32"]["relative_difference"] == 0.0


def test_writes_json_markdown_png_and_the_requested_figure(quick_run):
    out, figure, results = quick_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    markdown = (out / "results.md").read_text()
    assert markdown == quality.render_markdown(results)
    for task in quality.TASKS:
        assert f"| {task} |" in markdown
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and figure.read_bytes() == png


def test_the_docs_figure_is_written_only_on_request():
    args = quality.parse_args(["--quick"])
    assert args.figure is None
