"""Adadelta beyond the generic suites: its two buffers are torch's, and the rule's edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.support.torch_buffers import (
    START,
    assert_buffers_match_torch,
    find_state,
    gradient,
    torch_params,
)
from tests.support.torch_oracle import require_torch


@pytest.mark.torch
def test_buffers_are_torchs_square_avg_and_acc_delta():
    """Checkpoints convert one to one: after each step the state holds torch's buffers."""
    torch = require_torch()
    kwargs = {"rho": 0.8, "eps": 1e-4, "weight_decay": 0.1}
    assert_buffers_match_torch(
        torch,
        torch.optim.Adadelta(torch_params(torch), lr=2.0, **kwargs),
        optkit.adadelta(learning_rate=2.0, **kwargs),
        optkit.ScaleByAdadeltaState,
        {"square_avg": "square_avg", "acc_delta": "acc_delta"},
    )


def test_learning_rate_scales_the_steps_but_not_their_history():
    """torch multiplies the step by lr after it enters acc_delta: for the same gradients, lr = 5
    gives five times the updates of lr = 1, with bit-identical buffers."""
    grads = [jax.tree.map(lambda p, k=k: jnp.cos((k + 1) * p), START) for k in range(5)]
    one, five = optkit.adadelta(learning_rate=1.0), optkit.adadelta(learning_rate=5.0)
    state_one, state_five = one.init(START), five.init(START)
    for g in grads:
        updates_one, state_one = one.update(g, state_one, START)
        updates_five, state_five = five.update(g, state_five, START)
        for name in START:
            np.testing.assert_allclose(updates_five[name], 5.0 * updates_one[name], rtol=1e-15)
    assert jax.tree.all(jax.tree.map(np.array_equal, state_one, state_five))
    acc_delta = find_state(state_one, optkit.ScaleByAdadeltaState).acc_delta
    assert np.all(np.asarray(acc_delta["w"]) > 0)


def test_zero_eps_never_moves():
    """With eps = 0 the step average starts at 0, so every step is sqrt(0) / sqrt(v) * g = 0."""
    tx = optkit.adadelta(learning_rate=1.0, eps=0.0)
    params = {name: jnp.asarray(value) for name, value in START.items()}
    state = tx.init(params)
    for _ in range(3):
        grads = {k: jnp.asarray(g) for k, g in gradient(START).items()}
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)
    for name, value in START.items():
        np.testing.assert_array_equal(params[name], value)
