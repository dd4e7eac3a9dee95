"""docs/weight_averaging.md computes what it says: its update_bn recipe, its SWA hand-over.

The page runs (in order, as one script, at JAX's default precision) in
tests/docs/test_code_blocks.py; these tests read the namespace it leaves after each block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.docs.pages import PageRun, cached_run
from tests.support.torch_oracle import require_torch


@pytest.fixture(scope="module")
def page_run() -> PageRun:
    require_torch()  # the page shows torch's side too, and runs it
    return cached_run("docs/weight_averaging.md")


def test_the_page_trains_and_averages(page_run):
    page = page_run.after("ema_params")
    with jax.enable_x64(False):
        initial = float(jnp.mean(page["y"] ** 2))  # the loss at zero params
        loss = page["loss_fn"](page["params"], page["x"], page["y"])
        ema_loss = page["loss_fn"](page["ema_params"], page["x"], page["y"])
    # The EMA lags the params (decay 0.99: about 100 updates) but has trained too.
    assert float(loss) < 1e-4 * initial and float(ema_loss) < 1e-2 * initial
    predictions = page_run.blocks[-1].namespace["predictions"]
    assert predictions.shape == (256, 1) and bool(jnp.all(jnp.isfinite(predictions)))


def test_swa_schedules_hand_over_where_the_page_says(page_run):
    page = page_run.after("learning_rate")
    with jax.enable_x64(False):
        learning_rate, cosine = page["learning_rate"], page["cosine"]
        np.testing.assert_allclose(learning_rate(749), cosine(749), rtol=1e-6)
        np.testing.assert_allclose(learning_rate(750), cosine(750), rtol=1e-6)
        np.testing.assert_allclose(learning_rate(800), 0.01, rtol=1e-6)
        page = page_run.after("per_epoch")
        per_epoch, handover, cosine = page["per_epoch"], page["handover"], page["cosine"]
        np.testing.assert_allclose(per_epoch(handover), cosine(handover), rtol=1e-6)
        np.testing.assert_allclose(per_epoch(handover + 10), 0.05, rtol=1e-6)
        state = page["tx"].init({"w": jnp.zeros(2)})
        assert isinstance(state, optkit.WeightAveragingState)


def test_update_bn_recipe_is_the_equal_weight_mean_of_batch_statistics(page_run):
    """Each batch's statistics of the batch-norm input, averaged with equal weights."""
    page = page_run.blocks[-1].namespace
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
