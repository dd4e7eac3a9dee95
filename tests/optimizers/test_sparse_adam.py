"""SparseAdam beyond the parity suite: its moments against torch's state on a gradient sequence
whose zeros move (an all-zero gradient included), and an embedding table trained against
``torch.nn.Embedding(sparse=True)``, torch's own source of sparse gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.support.torch_oracle import require_torch

FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}

# Rows are updates; zeros are absent entries. Update 3 has no entry at all (torch skips it but
# counts it in the bias corrections); entry 2 is absent at first, entry 0 comes back later.
GRADIENTS = np.array(
    [
        [0.5, -1.0, 0.0, 2.0],
        [0.0, -0.5, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.3, 0.0, -2.0, 0.0],
        [-0.2, 0.4, 1.0, 0.0],
    ]
)
START = np.array([1.0, -2.0, 0.5, 3.0])


@pytest.mark.torch
@pytest.mark.parametrize("maximize", [False, True])
def test_moments_and_params_match_torch_state(maximize: bool) -> None:
    torch = require_torch()
    kwargs = {"b1": 0.8, "b2": 0.9, "eps": 1e-3}
    param = torch.tensor(START, requires_grad=True)
    optimizer = torch.optim.SparseAdam(
        [param], lr=0.1, betas=(kwargs["b1"], kwargs["b2"]), eps=kwargs["eps"], maximize=maximize
    )
    tx = optkit.sparse_adam(learning_rate=0.1, **kwargs, maximize=maximize)
    params = jnp.asarray(START)
    state = tx.init(params)
    for k, grad in enumerate(GRADIENTS):
        param.grad = torch.tensor(grad).to_sparse()
        optimizer.step()
        updates, state = tx.update(jnp.asarray(grad), state, params)
        params = optkit.apply_updates(params, updates)
        moments = state[-2]  # chain: negate (maximize) -> scale_by_sparse_adam -> learning rate
        torch_state = optimizer.state[param]
        assert int(moments.count) == torch_state["step"] == k + 1
        np.testing.assert_allclose(params, param.detach().numpy(), **FLOAT64, err_msg=str(k))
        np.testing.assert_allclose(moments.mu, torch_state["exp_avg"].numpy(), **FLOAT64)
        np.testing.assert_allclose(moments.nu, torch_state["exp_avg_sq"].numpy(), **FLOAT64)
        # An absent entry keeps its moments and its value exactly.
        absent = grad == 0
        if k > 0:
            np.testing.assert_array_equal(np.asarray(updates)[absent], 0.0)


def test_first_present_update_uses_the_global_step_count() -> None:
    """Mathematics: an entry first present at update 2 gets m = (1 - b1) g, v = (1 - b2) g^2,
    and the step size lr * sqrt(1 - b2^2) / (1 - b1^2) of update 2, not of its first update."""
    b1, b2, lr = 0.9, 0.99, 0.1
    tx = optkit.sparse_adam(learning_rate=lr, b1=b1, b2=b2, eps=0.0)
    params = jnp.zeros(2)
    state = tx.init(params)
    _, state = tx.update(jnp.array([1.0, 0.0]), state, params)
    updates, state = tx.update(jnp.array([1.0, 2.0]), state, params)
    m, v = (1 - b1) * 2.0, (1 - b2) * 4.0
    expected = -lr * np.sqrt(1 - b2**2) / (1 - b1**2) * m / np.sqrt(v)
    np.testing.assert_allclose(updates[1], expected, rtol=1e-6)


@pytest.mark.torch
def test_embedding_table_matches_torch_sparse_embedding() -> None:
    """torch's intended use: nn.Embedding(sparse=True) gives row-sparse gradients; in JAX, the
    rows a batch does not look up have exactly zero gradient."""
    torch = require_torch()
    rng = np.random.default_rng(0)
    table = rng.normal(size=(8, 3))
    targets = rng.normal(size=(8, 3))
    batches = [rng.choice(6, size=3, replace=False) for _ in range(15)]  # rows 6, 7: never

    embedding = torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=False, sparse=True)
    optimizer = torch.optim.SparseAdam(embedding.parameters(), lr=0.05)
    targets_t = torch.tensor(targets)

    def loss(weights, rows):
        return jnp.sum(
            (weights[rows] - jnp.asarray(targets)[rows]) ** 2 * (1.0 + 0.3 * jnp.sin(weights[rows]))
        )

    grad = jax.jit(jax.grad(loss))
    tx = optkit.sparse_adam(learning_rate=0.05)
    weights = jnp.asarray(table)
    state = tx.init(weights)
    for rows in batches:
        optimizer.zero_grad()
        looked_up = embedding(torch.tensor(rows))
        ((looked_up - targets_t[rows]) ** 2 * (1.0 + 0.3 * torch.sin(looked_up))).sum().backward()
        optimizer.step()
        updates, state = tx.update(grad(weights, jnp.asarray(rows)), state, weights)
        weights = optkit.apply_updates(weights, updates)
    never_seen = sorted(set(range(8)) - {int(r) for rows in batches for r in rows})
    assert never_seen == [6, 7]
    np.testing.assert_array_equal(weights[6:], table[6:])
    np.testing.assert_allclose(weights, embedding.weight.detach().numpy(), **FLOAT64)
