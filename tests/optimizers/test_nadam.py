"""NAdam beyond the generic suites: its float32 ``mu_product`` state, its first step, its decays.

Expected values come from torch.optim.NAdam's own state or from the update rule worked out by
hand, never from optkit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.parity import problem
from tests.support.torch_oracle import require_torch


def nadam_state(state: optkit.OptState) -> optkit.ScaleByNadamState:
    (found,) = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optkit.ScaleByNadamState))
        if isinstance(s, optkit.ScaleByNadamState)
    ]
    return found


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mu_product_is_torchs_float32_scalar_bit_for_bit(dtype):
    """torch keeps mu_product as a float32 tensor (its _get_scalar_dtype()) even for float64
    params, multiplied each step by mu_t rounded to float32: optkit's must be the same number."""
    torch = require_torch()
    kwargs = {"learning_rate": 0.01, "b1": 0.8, "momentum_decay": 0.3}
    params = problem.initial_params(dtype)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.NAdam(
        list(leaves.values()), lr=kwargs["learning_rate"], betas=(0.8, 0.999), momentum_decay=0.3
    )
    tx = optkit.nadam(**kwargs)
    jax_params = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(jax_params)
    assert nadam_state(state).mu_product.dtype == jnp.float32

    for _ in range(25):
        _, grads = problem.torch_loss_and_grads({k: p.detach().numpy() for k, p in leaves.items()})
        for name, leaf in leaves.items():
            leaf.grad = torch.tensor(grads[name])
        optimizer.step()
        updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, state)
        jax_params = optkit.apply_updates(jax_params, updates)

    torch_products = {optimizer.state[p]["mu_product"] for p in leaves.values()}
    (torch_product,) = {(t.dtype, t.item()) for t in torch_products}
    ours = nadam_state(state).mu_product
    assert torch_product[0] == torch.float32
    assert ours.dtype == jnp.float32 and ours.shape == ()
    assert float(ours) == torch_product[1]


def first_step(lr: float, b1: float, psi: float) -> float:
    """The size of NAdam's first step (eps = 0): g/d = sign(g) and m_1 = (1 - b1) g, so
    lr * ((1 - mu_1) / (1 - P_1) + (1 - b1) * mu_2 / (1 - P_1 * mu_2)) with the product
    P_1 = mu_1 rounded to float32, as torch stores it; the rest in double."""
    mu_1 = b1 * (1 - 0.5 * 0.96**psi)
    mu_2 = b1 * (1 - 0.5 * 0.96 ** (2 * psi))
    product = float(np.float32(mu_1))
    return lr * ((1 - mu_1) / (1 - product) + (1 - b1) * mu_2 / (1 - product * mu_2))


def test_first_step_is_the_nesterov_corrected_sign():
    lr, b1, psi = 0.1, 0.9, 0.5
    tx = optkit.nadam(learning_rate=lr, b1=b1, eps=0.0, momentum_decay=psi)
    grads = jnp.array([0.25, -3.0, 7.0], jnp.float64)
    updates, _ = tx.update(grads, tx.init(jnp.zeros(3, jnp.float64)))
    np.testing.assert_allclose(updates, -first_step(lr, b1, psi) * np.sign(grads), rtol=1e-13)


def test_decoupled_decay_shrinks_by_lr_times_wd_before_the_step():
    """NAdamW: with a zero gradient the moments stay zero and only the shrink is left."""
    params = jnp.array([2.0, -4.0], jnp.float64)
    tx = optkit.nadam(learning_rate=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    updates, _ = tx.update(jnp.zeros(2, jnp.float64), tx.init(params), params)
    np.testing.assert_allclose(optkit.apply_updates(params, updates), params * (1 - 0.1 * 0.5))


def test_coupled_decay_goes_through_the_adaptive_denominator():
    """L2: with a zero gradient the decay term is the gradient, so the first step has its sign."""
    params = jnp.array([2.0, -4.0], jnp.float64)
    tx = optkit.nadam(learning_rate=0.1, weight_decay=0.5, eps=0.0)
    updates, _ = tx.update(jnp.zeros(2, jnp.float64), tx.init(params), params)
    step = first_step(0.1, 0.9, 4e-3)
    np.testing.assert_allclose(updates, [-step, step], rtol=1e-13)
    assert math.isclose(step, 0.10565, rel_tol=1e-4)
