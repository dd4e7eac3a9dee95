"""Adamax beyond the generic suites: its buffers are torch's, and eps sits inside the maximum."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.support.torch_buffers import assert_buffers_match_torch, torch_params
from tests.support.torch_oracle import require_torch


@pytest.mark.torch
def test_buffers_are_torchs_step_exp_avg_and_exp_inf():
    """Checkpoints convert one to one: after each step the state holds torch's buffers."""
    torch = require_torch()
    assert_buffers_match_torch(
        torch,
        torch.optim.Adamax(
            torch_params(torch), lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1
        ),
        optkit.adamax(learning_rate=0.05, b1=0.8, b2=0.9, eps=1e-3, weight_decay=0.1),
        optkit.ScaleByAdamaxState,
        {"count": "step", "mu": "exp_avg", "inf_norm": "exp_inf"},
    )


def test_eps_is_added_to_the_gradient_inside_the_maximum():
    """One gradient g, then zeros: u_t = max(b2**(t-1) * (|g| + eps), 0 + eps), which decays
    to the floor eps; eps added after the maximum would give b2**(t-1) * |g| + eps instead."""
    b1, b2, eps, g = 0.5, 0.5, 0.1, np.array([4.0, -1.0])
    tx = optkit.scale_by_adamax(b1=b1, b2=b2, eps=eps)
    state = tx.init(jnp.zeros(2))
    for t in range(1, 9):
        gradient = g if t == 1 else np.zeros(2)
        updates, state = tx.update(jnp.asarray(gradient), state)
        inf_norm = np.maximum(b2 ** (t - 1) * (np.abs(g) + eps), eps)
        mu = (1 - b1) * b1 ** (t - 1) * g
        np.testing.assert_allclose(state.inf_norm, inf_norm, rtol=1e-15)
        np.testing.assert_allclose(updates, mu / (1 - b1**t) / inf_norm, rtol=1e-14)
    assert np.all(np.asarray(state.inf_norm) == eps)  # both entries reached the floor
