"""Adadelta beyond the generic suites: its two buffers are torch's, and the rule's edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.support.torch_oracle import require_torch

_rng = np.random.default_rng(7)
START = {"w": _rng.normal(size=(3, 4)), "b": _rng.normal(size=(4,))}


def gradient(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Of sum(p**2 + cos(p)): non-convex, the same numpy function for both frameworks."""
    return {name: 2 * p - np.sin(p) for name, p in params.items()}


def adadelta_state(state: optkit.OptState) -> optkit.ScaleByAdadeltaState:
    (found,) = (
        s
        for s in jax.tree.leaves(
            state, is_leaf=lambda s: isinstance(s, optkit.ScaleByAdadeltaState)
        )
        if isinstance(s, optkit.ScaleByAdadeltaState)
    )
    return found


@pytest.mark.torch
def test_buffers_are_torchs_square_avg_and_acc_delta():
    """Checkpoints convert one to one: after each step the state holds torch's buffers."""
    torch = require_torch()
    kwargs = {"rho": 0.8, "eps": 1e-4, "weight_decay": 0.1}
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in START.items()}
    optimizer = torch.optim.Adadelta(list(tensors.values()), lr=2.0, **kwargs)
    tx = optkit.adadelta(learning_rate=2.0, **kwargs)
    params = {name: jnp.asarray(value) for name, value in START.items()}
    state = tx.init(params)
    for _ in range(10):
        for name, grad in gradient({k: t.detach().numpy() for k, t in tensors.items()}).items():
            tensors[name].grad = torch.tensor(grad)
        optimizer.step()
        grads = {k: jnp.asarray(g) for k, g in gradient(jax.tree.map(np.asarray, params)).items()}
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)

        buffers = adadelta_state(state)
        for name, tensor in tensors.items():
            expected = optimizer.state[tensor]
            np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(
                buffers.square_avg[name], expected["square_avg"].numpy(), rtol=1e-12
            )
            np.testing.assert_allclose(
                buffers.acc_delta[name], expected["acc_delta"].numpy(), rtol=1e-12
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
    assert np.all(np.asarray(adadelta_state(state_one).acc_delta["w"]) > 0)


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
