"""docs/weight_averaging.md runs as written, and its update_bn recipe computes what it says.

The page's optkit blocks run in order as one script, at JAX's default precision (float32) as a
user runs them; blocks starting with ``# torch`` are torch's side, shown for comparison only.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit

DOC = Path(__file__).resolve().parents[2] / "docs" / "weight_averaging.md"
_PYTHON = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def snapshots() -> list[dict[str, Any]]:
    """The page's namespace after each of its optkit blocks (later blocks reuse names)."""
    text = DOC.read_text()
    # A real module: the page defines a Flax module, a dataclass that looks itself up there.
    module = types.ModuleType("weight_averaging_doc")
    taken = []
    with pytest.MonkeyPatch.context() as patch, jax.enable_x64(False):
        patch.setitem(sys.modules, module.__name__, module)
        for match in _PYTHON.finditer(text):
            code = match.group(1)
            if code.startswith("# torch"):
                continue
            # Leading newlines make tracebacks point at the page's own line numbers.
            line = text.count("\n", 0, match.start()) + 2
            exec(compile("\n" * (line - 1) + code, str(DOC), "exec"), module.__dict__)
            taken.append(dict(module.__dict__))
    return taken


def after(snapshots: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The namespace right after the block that first defines ``name``."""
    return next(snapshot for snapshot in snapshots if name in snapshot)


def test_the_page_trains_and_averages(snapshots):
    page = after(snapshots, "ema_params")
    with jax.enable_x64(False):
        initial = float(jnp.mean(page["y"] ** 2))  # the loss at zero params
        loss = page["loss_fn"](page["params"], page["x"], page["y"])
        ema_loss = page["loss_fn"](page["ema_params"], page["x"], page["y"])
    # The EMA lags the params (decay 0.99: about 100 updates) but has trained too.
    assert float(loss) < 1e-4 * initial and float(ema_loss) < 1e-2 * initial
    predictions = snapshots[-1]["predictions"]
    assert predictions.shape == (256, 1) and bool(jnp.all(jnp.isfinite(predictions)))


def test_swa_schedules_hand_over_where_the_page_says(snapshots):
    page = after(snapshots, "learning_rate")
    with jax.enable_x64(False):
        learning_rate, cosine = page["learning_rate"], page["cosine"]
        np.testing.assert_allclose(learning_rate(749), cosine(749), rtol=1e-6)
        np.testing.assert_allclose(learning_rate(750), cosine(750), rtol=1e-6)
        np.testing.assert_allclose(learning_rate(800), 0.01, rtol=1e-6)
        page = after(snapshots, "per_epoch")
        per_epoch, handover, cosine = page["per_epoch"], page["handover"], page["cosine"]
        np.testing.assert_allclose(per_epoch(handover), cosine(handover), rtol=1e-6)
        np.testing.assert_allclose(per_epoch(handover + 10), 0.05, rtol=1e-6)
        state = page["tx"].init({"w": jnp.zeros(2)})
        assert isinstance(state, optkit.WeightAveragingState)


def test_update_bn_recipe_is_the_equal_weight_mean_of_batch_statistics(snapshots):
    """Each batch's statistics of the batch-norm input, averaged with equal weights."""
    page = snapshots[-1]
    params, stats = page["swa_params"], page["swa_stats"]["BatchNorm_0"]
    dense = params["Dense_0"]
    means, variances = [], []
    for start in range(0, 256, 32):
        hidden = np.asarray(page["x"][start : start + 32], np.float64) @ np.asarray(
            dense["kernel"], np.float64
        ) + np.asarray(dense["bias"], np.float64)
        means.append(hidden.mean(axis=0))
        variances.append(hidden.var(axis=0))  # biased, as Flax's BatchNorm
    np.testing.assert_allclose(stats["mean"], np.mean(means, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], np.mean(variances, axis=0), rtol=1e-4, atol=1e-6)
