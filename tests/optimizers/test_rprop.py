"""Rprop beyond the generic suites: its state against torch's ``optimizer.state[p]``, what a
learning-rate schedule and new ``etas`` mid-run mean (against torch's scheduler and
``param_groups`` edits), the clamp of the first step, and the checks of ``etas`` and
``step_sizes``, which the registry's range table does not cover (they are tuples)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.parity import problem
from tests.support.torch_oracle import require_torch

STEPS = 20
FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}


def run_torch(kwargs: dict[str, Any], *, schedule=None, etas_at: dict[int, tuple] | None = None):
    """torch's params, step sizes and previous gradients after each step, in float64."""
    torch = require_torch()
    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in problem.initial_params(np.float64).items()
    }
    optimizer = torch.optim.Rprop(list(params.values()), **kwargs)
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    records = []
    for k in range(STEPS):
        if etas_at and k in etas_at:
            optimizer.param_groups[0]["etas"] = etas_at[k]
        optimizer.zero_grad()
        problem.torch_loss(params).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state = {name: optimizer.state[p] for name, p in params.items()}
        records.append(
            {
                "params": {n: p.detach().numpy().copy() for n, p in params.items()},
                "step_size": {n: s["step_size"].numpy().copy() for n, s in state.items()},
                "prev": {n: s["prev"].numpy().copy() for n, s in state.items()},
            }
        )
    return records


def run_optkit(build, *, rebuild_at: dict[int, Any] | None = None):
    """optkit's params and state after each step; ``rebuild_at[k]`` replaces the transform
    before the k-th update and keeps the state."""
    params = {n: jnp.asarray(v) for n, v in problem.initial_params(np.float64).items()}
    tx = build()
    state = tx.init(params)
    records = []
    for k in range(STEPS):
        if rebuild_at and k in rebuild_at:
            tx = rebuild_at[k]()
        _, grads = problem.jax_value_and_grad(params)
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)
        rprop_state = state[-2]  # chain: negate (maximize) -> scale_by_rprop -> negate
        records.append(
            {
                "params": {n: np.asarray(p) for n, p in params.items()},
                "step_size": {n: np.asarray(s) for n, s in rprop_state.step_size.items()},
                "prev": {n: np.asarray(s) for n, s in rprop_state.prev.items()},
            }
        )
    return records


def assert_same(ours, theirs) -> None:
    for k, (mine, expected) in enumerate(zip(ours, theirs, strict=True)):
        for field, values in expected.items():
            for name, value in values.items():
                np.testing.assert_allclose(
                    mine[field][name], value, **FLOAT64, err_msg=f"step {k + 1}: {field} {name}"
                )


@pytest.mark.torch
def test_state_matches_torch() -> None:
    kwargs = {"etas": (0.4, 1.3), "step_sizes": (1e-3, 0.2)}
    expected = run_torch({"lr": 0.02, **kwargs})
    # Some signs flipped: their step sizes shrank and their previous gradient is zero.
    assert any(np.any(r["prev"]["matrix"] == 0) for r in expected)
    assert_same(run_optkit(lambda: optkit.rprop(learning_rate=0.02, **kwargs)), expected)


@pytest.mark.torch
def test_learning_rate_schedule_is_read_once_like_torch() -> None:
    """torch reads lr when it builds the state, at its first step: a scheduler changes nothing.
    A schedule's value at count 0 initializes the step sizes; later values are not read."""
    expected = run_torch({"lr": 0.02}, schedule=lambda epoch: 10.0 ** (-epoch))
    assert_same(run_optkit(lambda: optkit.rprop(learning_rate=0.02)), expected)
    schedule = lambda count: 0.02 * 10.0 ** (-count)
    assert_same(run_optkit(lambda: optkit.rprop(learning_rate=schedule)), expected)


@pytest.mark.torch
def test_new_etas_mid_run_by_rebuilding_with_the_same_state() -> None:
    """torch reads etas at every step; in optkit they are fixed when built, and the state does not
    depend on them: a new rprop with the old state continues as torch after the edit."""
    expected = run_torch({"lr": 0.02}, etas_at={8: (0.3, 1.5)})
    ours = run_optkit(
        lambda: optkit.rprop(learning_rate=0.02),
        rebuild_at={8: lambda: optkit.rprop(learning_rate=0.02, etas=(0.3, 1.5))},
    )
    assert_same(ours, expected)


@pytest.mark.torch
def test_nan_gradient_entry_stays_put_like_torch() -> None:
    """torch's CPU sign(NaN) is 0: the entry does not move, its step size is kept, and prev
    holds the NaN, whose sign is 0 again at the next update."""
    torch = require_torch()
    param = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Rprop([param], lr=0.1)
    tx = optkit.rprop(learning_rate=0.1)
    params = jnp.array([1.0, 2.0])
    state = tx.init(params)
    for grad in ([1.0, 1.0], [math.nan, 1.0], [1.0, -1.0], [1.0, -1.0]):
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        updates, state = tx.update(jnp.array(grad), state, params)
        params = optkit.apply_updates(params, updates)
        torch_state = optimizer.state[param]
        np.testing.assert_array_equal(params, param.detach().numpy())
        np.testing.assert_array_equal(state[0].step_size, torch_state["step_size"].numpy())
        np.testing.assert_array_equal(state[0].prev, torch_state["prev"].numpy())
    assert np.all(np.isfinite(params))


def test_step_sizes_are_clamped_from_the_first_update() -> None:
    """Mathematics: the first update has no previous sign (factor 1), and torch still clamps, so
    a learning rate above the maximum moves each element by the maximum."""
    tx = optkit.rprop(learning_rate=1.0, step_sizes=(1e-3, 0.25))
    params = jnp.array([1.0, -2.0, 0.5])
    updates, state = tx.update(jnp.array([2.0, -1.0, 0.0]), tx.init(params), params)
    np.testing.assert_array_equal(updates, [-0.25, 0.25, 0.0])
    np.testing.assert_array_equal(state[-2].step_size, [0.25, 0.25, 0.25])


def test_a_zero_gradient_neither_moves_nor_resets_the_step_size() -> None:
    """sign(0 * prev) = 0: factor 1 and no move; the next update sees a previous gradient of 0."""
    tx = optkit.scale_by_rprop(learning_rate=0.1)
    state = tx.init(jnp.zeros(1))
    for grad, update, step_size in [(1.0, 0.1, 0.1), (0.0, 0.0, 0.1), (1.0, 0.1, 0.1)]:
        out, state = tx.update(jnp.array([grad]), state)
        np.testing.assert_allclose(out, [update], rtol=1e-7)
        np.testing.assert_allclose(state.step_size, [step_size], rtol=1e-7)


@pytest.mark.parametrize(
    "etas",
    [(1.0, 1.2), (0.5, 1.0), (0.0, 1.2), (-0.5, 1.2), (0.5, 0.9), (math.nan, 1.2), (0.5, math.nan)],
)
def test_etas_must_bracket_one(etas) -> None:
    with pytest.raises(ValueError, match=r"^etas must satisfy 0 < etaminus < 1 < etaplus"):
        optkit.rprop(etas=etas)


@pytest.mark.parametrize(
    "step_sizes", [(-1e-6, 50.0), (1.0, 0.5), (math.nan, 1.0), (0.0, math.nan)]
)
def test_step_sizes_must_be_an_ordered_range(step_sizes) -> None:
    with pytest.raises(ValueError, match=r"^step_sizes must be \(min, max\) with 0 <= min <= max"):
        optkit.rprop(step_sizes=step_sizes)


@pytest.mark.parametrize("bad", [0.5, (0.5,), (0.5, 1.2, 2.0), "ab", None])
@pytest.mark.parametrize("name", ["etas", "step_sizes"])
def test_pairs_must_be_two_numbers(name, bad) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a tuple of two numbers"):
        optkit.rprop(**{name: bad})


def test_pair_elements_must_be_numbers() -> None:
    with pytest.raises(TypeError, match=r"^etas\[1\] must be a number"):
        optkit.rprop(etas=(0.5, "1.2"))


def test_edge_values_and_lists_are_accepted() -> None:
    optkit.rprop(learning_rate=0.0, etas=[0.01, 1.01], step_sizes=(0.0, 0.0))
    optkit.scale_by_rprop(step_sizes=(2.0, 2.0))


def test_traced_pairs_are_accepted() -> None:
    @jax.jit
    def step(etas, params):
        tx = optkit.rprop(learning_rate=0.1, etas=(etas[0], etas[1]))
        updates, _ = tx.update(params, tx.init(params), params)
        return updates

    np.testing.assert_allclose(step(jnp.array([0.5, 1.2]), jnp.ones(2)), [-0.1, -0.1])
