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
        assert list(entry["runs"]) == list(quality.TASKS[task].quick_variants), task
        steps = {run["steps"] for run in entry["runs"].values()}
        assert len(steps) == 1, task  # the same schedule for every state format
        for bits, run in entry["runs"].items():
            arguments = quality.VARIANTS[bits][1]
            assert run["state_bits"] == int(arguments[1])
            assert run["zero_free"] == ("--zero-free" in arguments)
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


def test_paired_differences_match_a_one_sample_t_interval():
    from scipy import stats

    float32s = [1.0, 2.0, 4.0, 0.5, 1.5, 1.0, 2.0]
    quantized = [1.1, 1.9, 4.4, 0.5, 1.65, 1e20, float("nan")]
    out = quality.paired_differences(float32s, quantized)
    assert out["diverged"] == [5, 6]  # over 10x float32's, and not finite
    kept = [0.1, -0.05, 0.1, 0.0, 0.1]
    assert out["relative_differences"][:5] == pytest.approx(kept)
    assert out["mean_relative_difference"] == pytest.approx(0.05)
    assert out["median_relative_difference"] == pytest.approx(0.1)
    assert out["standard_error"] == pytest.approx(stats.sem(kept))
    interval = stats.ttest_1samp(kept, 0.0).confidence_interval(0.95)
    assert out["interval_95"] == pytest.approx([interval.low, interval.high])
    assert out["float32_relative_std"] == pytest.approx(stats.tstd(float32s) / (12 / 7))


def test_markdown_has_a_row_per_variant_and_paired_loss():
    pairs = quality.paired_differences([1.0, 2.0, 3.0, 1.0], [1.01, 1.98, 3.03, 50.0])
    entry = {
        "metric": "final_train_loss",
        "comparison": {
            "32": {"final_loss": 1.0, "relative_difference": 0.0},
            "8z": {"final_loss": 1.02, "relative_difference": 0.02},
        },
        "runs": {"32": {"seconds": 1.0, "steps": 3}, "8z": {"seconds": 1.0, "steps": 3}},
        "min_size": 4096,
        "quantized_leaves": "1 of 2 leaves",
        "float32_next_seed": {"relative_difference": 0.02},
        "float32_update_noise": {"relative_differences": [0.001, -0.002]},
        "seeds": {"seeds": [0, 1, 2, 3], "8": {"final_train_loss": pairs, "test_loss": pairs}},
    }
    machine = {
        "date": "d",
        "command": "c",
        "cpu_model": "m",
        "cpu_cores_available": 2,
        "backend": "cpu",
        "versions": {},
        "git_commit": "g",
    }
    markdown = quality.render_markdown({"machine": machine, "tasks": {"digits MLP": entry}})
    assert "| float32 | 8-bit zero_free | 8-bit zero_free vs float32 |" in markdown
    assert "| 1.00000 | 1.02000 | +2.00% (missed) |" in markdown
    low, high = pairs["interval_95"]
    for name in ("final_train_loss", "test_loss"):
        assert (
            f"| digits MLP | 8-bit | {name} | 4 | 1 | {pairs['mean_relative_difference']:+.2%} | "
            f"{pairs['standard_error']:.2%} | {low:+.2%} to {high:+.2%} | +1.00% | "
            "-1.0% to +1.0% |"
        ) in markdown
