"""Every example runs for real in quick mode: check that it learns, and what it shows is true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tests.support.examples import EXAMPLES, load_example

OPTIMIZER_NAMES = {
    "SGD",
    "SGD momentum",
    "SGD Nesterov",
    "Adam",
    "AdamW",
    "Adagrad",
    "RMSprop",
}


DOCS_IMAGES = EXAMPLES.parent / "docs" / "images"
# The examples that write files, and what: into --out, by default the gitignored outputs/.
WRITES = {
    "compare_optimizers": "compare_optimizers.png",
    "mixed_precision": "mixed_precision.png",
    "sharded_training": "sharded_training.json",
    "trajectories": "trajectories.png",
}


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Examples import train_digits's data and model, as they do when run as scripts.
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture(autouse=True)
def committed_figures_untouched() -> Iterator[None]:
    """No example run (quick, as here) may overwrite the figures the docs show."""
    before = {path.name: path.read_bytes() for path in DOCS_IMAGES.iterdir()}
    yield
    assert {path.name: path.read_bytes() for path in DOCS_IMAGES.iterdir()} == before


# Examples whose --out is optional and writes nothing by default (per-process metrics that the
# launcher asks for in its own work folder).
WRITES_ONLY_WHEN_ASKED = {"multihost_training"}


def test_examples_write_into_the_gitignored_outputs_folder():
    with_out = {path.stem for path in EXAMPLES.glob("*.py") if '"--out"' in path.read_text()}
    assert with_out == set(WRITES) | WRITES_ONLY_WHEN_ASKED
    for name in WRITES_ONLY_WHEN_ASKED:
        assert load_example(name).parse_args([]).out is None, name
    assert "/outputs/" in (EXAMPLES.parent / ".gitignore").read_text().splitlines()
    for name in WRITES:
        module = load_example(name)
        for argv in ([], ["--quick"]):
            assert module.parse_args(argv).out == EXAMPLES.parent / "outputs", (name, argv)


def assert_is_plot(path: Path) -> None:
    """A real figure: a PNG over 10 KB that matplotlib reads back as a non-blank image."""
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 10_000, f"{path} is only {path.stat().st_size} bytes"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 300
    assert np.std(image[..., :3]) > 0.05  # not a blank canvas


def test_train_digits_quick_run_learns():
    metrics = load_example("train_digits").main(["--quick", "--seed", "0"])

    assert metrics["epochs"] == 2
    # Chance is 1/10 with a loss near ln(10) ~ 2.3. Two epochs of adamw with the cosine schedule
    # reach ~0.15 train loss and 0.94-0.95 test accuracy over seeds 0-4; the bars leave room for
    # platform differences.
    assert metrics["final_train_loss"] < 0.15 * metrics["initial_train_loss"]
    assert metrics["test_accuracy"] > 0.90


def test_compare_optimizers_trains_every_optimizer_and_plots(tmp_path: Path):
    metrics = load_example("compare_optimizers").main(["--quick", "--out", str(tmp_path)])
    out = tmp_path / "compare_optimizers.png"
    assert metrics["out"] == str(out)

    assert set(metrics["optimizers"]) == OPTIMIZER_NAMES
    for name, result in metrics["optimizers"].items():
        # Two epochs take the loss from ~2.3 to 0.3-0.8, or ~1.05 for plain SGD, the slowest.
        assert result["final_train_loss"] < 0.65 * result["initial_train_loss"], name
        assert result["test_accuracy"] > 0.5, name
    assert_is_plot(out)


def test_trajectories_descend_and_plot(tmp_path: Path):
    metrics = load_example("trajectories").main(["--quick", "--out", str(tmp_path)])
    out = tmp_path / "trajectories.png"
    assert metrics["out"] == str(out)

    assert set(metrics["problems"]) == {"Rosenbrock", "Rastrigin"}
    for problem, runs in metrics["problems"].items():
        assert set(runs) == OPTIMIZER_NAMES
        for name, run in runs.items():
            # Every learning rate in the table is stable: no path diverges, and each ends lower.
            assert run["finite"], (problem, name)
            assert run["final_loss"] < run["initial_loss"], (problem, name)
    assert_is_plot(out)


def test_param_groups_hyperparameters_reach_their_leaves():
    metrics = load_example("param_groups").main(["--quick"])

    first = metrics["base_and_classifier"]
    assert [g["learning_rate"] for g in first["hyperparams"]] == pytest.approx([1e-2, 1e-3])
    assert [g["momentum"] for g in first["hyperparams"]] == pytest.approx([0.9, 0.9])
    # With every gradient 1, the first momentum step is the group's lr, leaf by leaf.
    for path, change in first["first_step"].items():
        expected = 1e-2 if path.startswith("base/") else 1e-3
        assert change == pytest.approx(expected, rel=1e-5), path
    # set_hyperparams(group=0) changed the base's lr only, without recompiling the step.
    assert first["learning_rates_after_set"] == pytest.approx([1e-3, 1e-3])
    assert first["compilations"] == 1

    second = metrics["no_bias_decay"]
    assert [g["weight_decay"] for g in second["hyperparams"]] == pytest.approx([1e-2, 0.0])
    # With zero gradients only weight decay moves a leaf: the biases stay, the kernels shrink.
    for path, change in second["first_step"].items():
        if path.endswith("bias"):
            assert change == 0.0, path
        else:
            assert change > 0.0, path

    for result in (first, second):
        assert result["final_train_loss"] < 0.95 * result["initial_train_loss"]


def test_sharded_training_shards_params_and_state(tmp_path: Path):
    # A fresh process: jax's backend must start with the simulated devices, and this one's has
    # already started. Its own XLA_FLAGS would be appended to, so leave them out.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    command = [sys.executable, str(EXAMPLES / "sharded_training.py")]
    command += ["--simulate-devices", "8", "--quick", "--out", str(tmp_path)]
    subprocess.run(command, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    metrics = json.loads((tmp_path / "sharded_training.json").read_text())

    assert metrics["devices"] == 8
    assert metrics["mesh"] == {"data": 4, "model": 2}
    kernel = metrics["params"]["Dense_0/kernel"]
    assert kernel["shape"] == [64, 1024] and kernel["shard_shape"] == [64, 512]
    assert metrics["params"]["Dense_1/bias"]["shard_shape"] == [10]  # small: replicated
    # AdamW's moments of the sharded kernel live in shards like the kernel, on every device.
    moments = {
        path: leaf
        for path, leaf in metrics["opt_state"].items()
        if path.endswith(("mu/Dense_0/kernel", "nu/Dense_0/kernel"))
    }
    assert len(moments) == 2
    for path, leaf in moments.items():
        assert leaf["shard_shape"] == [64, 512], path
        assert "model" in leaf["spec"], path
    assert metrics["state_shardings_kept"]
    assert metrics["final_train_loss"] < 0.5 * metrics["initial_train_loss"]
    assert metrics["test_accuracy"] > 0.85


def test_multihost_training_runs_two_local_processes(capsys: pytest.CaptureFixture[str]):
    # --local-processes starts the processes itself (localhost coordinator, gloo collectives);
    # tests/memory/test_multiprocess.py compares such a run with a single-process one.
    results = load_example("multihost_training").main(
        ["--local-processes", "2", "--cpu-devices", "2", "--quick"]
    )

    assert [(r["process_index"], r["process_count"], r["devices"]) for r in results] == [
        (0, 2, 4),
        (1, 2, 4),
    ]
    assert results[0]["params"] == results[1]["params"]
    assert len(results[0]["losses"]) == 10
    assert results[0]["losses"][-1] < 0.7 * results[0]["losses"][0]
    assert all(r["restored_equal"] for r in results)
    assert "2 processes, 4 devices" in capsys.readouterr().out


def test_mixed_precision_scales_accumulates_and_averages(tmp_path: Path):
    example = load_example("mixed_precision")
    metrics = example.main(["--quick", "--out", str(tmp_path)])
    out = tmp_path / "mixed_precision.png"
    history = metrics["history"]

    # 1,347 training images in micro-batches of 16, four to an optimizer step: 21 per epoch.
    assert metrics["optimizer_steps"] == 2 * 21 == len(history["scale"])
    assert metrics["final_loss"] < 0.3 * metrics["initial_loss"]
    # Two epochs reach ~0.93 test accuracy; the EMA (decay 0.95) trails the params a little.
    assert metrics["test_accuracy"] > 0.85
    assert metrics["ema_test_accuracy"] > 0.8
    # The scale follows torch's GradScaler rule, step by step: halved exactly on a skipped step,
    # doubled after GROWTH_INTERVAL clean steps in a row, unchanged otherwise.
    scale, clean = 65536.0, 0
    for got, skipped in zip(history["scale"], history["skipped_now"], strict=True):
        if skipped:
            scale, clean = scale * 0.5, 0
        else:
            clean += 1
            if clean == example.GROWTH_INTERVAL:
                scale, clean = scale * 2.0, 0
        assert got == scale
    assert metrics["final_scale"] > 65536.0  # it grew at least once in two epochs
    assert_is_plot(out)
