"""ASGD beyond the parity suite: the averaged params ``ax`` and the float32 scalars ``eta`` and
``mu`` against torch's ``optimizer.state[p]``, learning-rate schedules and mid-run changes against
torch's scheduler and ``param_groups`` edits, and ``averaged_params``'s errors.

The parity suite compares the params only, which ``ax`` never feeds back into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.parity import problem
from tests.support.torch_oracle import require_torch

STEPS = 20
TOLERANCES = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 1e-5, "atol": 1e-6}}

Changes = dict[int, dict[str, float]]
"""Before the k-th update (0-based): hyperparameters to set (optkit names)."""


def run_torch(
    kwargs: dict[str, Any], dtype: type, changes: Changes | None = None, schedule=None
) -> list[dict[str, Any]]:
    """Per step: torch's params, ``ax``, ``eta`` and ``mu`` (of the first param)."""
    torch = require_torch()
    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in problem.initial_params(dtype).items()
    }
    optimizer = torch.optim.ASGD(list(params.values()), **kwargs)
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    records = []
    for k in range(STEPS):
        for name, value in (changes or {}).get(k, {}).items():
            optimizer.param_groups[0]["lr" if name == "learning_rate" else name] = value
        optimizer.zero_grad()
        problem.torch_loss(params).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state = optimizer.state[params["scalar"]]
        records.append(
            {
                "params": {n: p.detach().numpy().copy() for n, p in params.items()},
                "ax": {n: optimizer.state[p]["ax"].numpy().copy() for n, p in params.items()},
                "eta": state["eta"].numpy().copy(),
                "mu": state["mu"].numpy().copy(),
            }
        )
    return records


def run_optkit(
    tx: optkit.GradientTransformation, dtype: type, changes: Changes | None = None
) -> list[dict[str, Any]]:
    params = {n: jnp.asarray(v) for n, v in problem.initial_params(dtype).items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    records = []
    for k in range(STEPS):
        if changes and k in changes:
            state = optkit.set_hyperparams(state, **changes[k])
        _, grads = problem.jax_value_and_grad(params)
        updates, state = update(grads, state, params)
        params = optkit.apply_updates(params, updates)
        asgd_state = next(
            s
            for s in jax.tree.leaves(
                state, is_leaf=lambda s: isinstance(s, optkit.ScaleByAsgdState)
            )
            if isinstance(s, optkit.ScaleByAsgdState)
        )
        records.append(
            {
                "params": {n: np.asarray(p) for n, p in params.items()},
                "ax": {n: np.asarray(a) for n, a in optkit.averaged_params(state).items()},
                "eta": np.asarray(asgd_state.eta),
                "mu": np.asarray(asgd_state.mu),
            }
        )
    return records


def assert_same(ours: list[dict], theirs: list[dict], dtype: type) -> None:
    for k, (mine, expected) in enumerate(zip(ours, theirs, strict=True)):
        for field in ("params", "ax"):
            for name in expected[field]:
                np.testing.assert_allclose(
                    mine[field][name],
                    expected[field][name],
                    **TOLERANCES[dtype],
                    err_msg=f"step {k + 1}, {field} {name}",
                )
        # The float32 scalars are the same float32 numbers, bit for bit.
        for field in ("eta", "mu"):
            assert mine[field].dtype == np.float32
            assert mine[field] == expected[field], f"step {k + 1}: {field}"


TORCH_KWARGS = {
    # Averaging from the 2nd update on: mu = 1/2, 1/3, ... (rounded to float32, as torch's).
    "t0_zero": {"lr": 0.05, "t0": 0.0},
    "t0_five": {"lr": 0.05, "lambd": 0.3, "alpha": 0.9, "t0": 5.0, "weight_decay": 0.1},
    # A fractional t0 gives weights that are not 1/k.
    "t0_fraction": {"lr": 0.03, "t0": 2.5, "maximize": True},
}


def optkit_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {("learning_rate" if k == "lr" else k): v for k, v in kwargs.items()}


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", list(TORCH_KWARGS))
def test_averaged_params_and_scalars_match_torch_state(case: str, dtype: type) -> None:
    kwargs = TORCH_KWARGS[case]
    expected = run_torch(kwargs, dtype)
    assert not np.allclose(expected[-1]["ax"]["matrix"], expected[-1]["params"]["matrix"])
    assert_same(run_optkit(optkit.asgd(**optkit_kwargs(kwargs)), dtype), expected, dtype)


@pytest.mark.torch
def test_mu_is_compared_with_one_in_float32() -> None:
    """t0 just below an integer: 1 / (t - t0) is below 1 in double but rounds to 1 in float32,
    so torch copies the params into ax (mu.item() == 1) instead of averaging with weight ~1."""
    kwargs = {"lr": 0.05, "t0": 3.0 - 1e-9}
    expected = run_torch(kwargs, np.float64)
    # After update 4, mu = 1 / (4 - t0) rounds to exactly 1.0 in float32.
    assert expected[3]["mu"] == 1.0 and 1 / (4 - kwargs["t0"]) != 1.0
    assert_same(run_optkit(optkit.asgd(**optkit_kwargs(kwargs)), np.float64), expected, np.float64)

    # Update 5 then copies. Copying and averaging with weight 1.0 differ by rounding only, so
    # the branch shows with an average far from the params: ax + (p - ax) * 1 loses p's digits.
    tx = optkit.scale_by_asgd(learning_rate=0.05, t0=kwargs["t0"])
    params = jnp.array([1.0, -2.0], jnp.float64)
    state = tx.init(params)._replace(count=jnp.int32(4), ax=jnp.full(2, 1e8, jnp.float64))
    assert state.mu == np.float32(1 / (4 - kwargs["t0"]))
    grads = jnp.array([0.3, 0.7], jnp.float64)
    _, state = tx.update(grads, state, params)
    eta = 0.05  # the first update's step size, kept in the state from init (a float32)
    expected_ax = params * (1 - 1e-4 * float(np.float32(eta))) - float(np.float32(eta)) * grads
    np.testing.assert_array_equal(optkit.averaged_params(state), expected_ax)


@pytest.mark.torch
def test_changes_mid_run_take_effect_like_torch() -> None:
    """A new learning rate, lambd or alpha sets eta from the next update on; a new t0 moves the
    start of the averaging; weight decay applies at once."""
    changes: Changes = {
        6: {"t0": 2.0, "lambd": 0.5},
        10: {"learning_rate": 0.01, "alpha": 0.3},
        14: {"weight_decay": 0.2, "t0": 12.0},
    }
    kwargs = {"learning_rate": 0.05, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0}
    torch_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
    expected = run_torch(torch_kwargs, np.float64, changes)
    tx = optkit.inject_hyperparams(optkit.asgd)(**kwargs)
    assert_same(run_optkit(tx, np.float64, changes), expected, np.float64)


@pytest.mark.torch
def test_schedule_matches_a_torch_scheduler() -> None:
    """The k-th update's learning rate (torch's lr after k scheduler steps) sets eta for update
    k + 1: the schedule acts one update late, through eta, as torch's scheduler does."""
    factor: Callable[[int], float] = lambda epoch: 0.8**epoch
    expected = run_torch({"lr": 0.05, "t0": 4.0}, np.float64, schedule=factor)
    tx = optkit.asgd(learning_rate=lambda count: 0.05 * 0.8**count, t0=4.0)
    assert_same(run_optkit(tx, np.float64), expected, np.float64)


def test_first_step_is_sgd_with_the_shrink() -> None:
    """Mathematics: eta_1 = lr, mu_1 = 1, so theta_1 = theta_0 (1 - lambd lr) - lr g, ax = theta_1,
    then eta_2 = lr / (1 + lambd lr)^alpha and mu_2 = 1 / max(1, 1 - t0)."""
    lr, lambd, alpha = 0.5, 0.2, 0.5
    tx = optkit.asgd(learning_rate=lr, lambd=lambd, alpha=alpha, t0=0.0)
    params = jnp.array([1.0, -2.0], jnp.float64)
    grads = jnp.array([0.5, 1.0], jnp.float64)
    updates, state = tx.update(grads, tx.init(params), params)
    new = params * (1 - lambd * lr) - lr * grads
    np.testing.assert_allclose(optkit.apply_updates(params, updates), new, rtol=1e-15)
    np.testing.assert_allclose(optkit.averaged_params(state), new, rtol=1e-15)
    asgd_state = state[-1]
    assert asgd_state.eta == np.float32(lr / (1 + lambd * lr) ** alpha)
    assert asgd_state.mu == np.float32(1.0)


def test_averaged_params_inside_inject_hyperparams_and_param_groups() -> None:
    params = {"w": jnp.ones(2), "b": jnp.zeros(1)}
    injected = optkit.inject_hyperparams(optkit.asgd)(learning_rate=0.1)
    state = injected.init(params)
    assert jax.tree.map(jnp.shape, optkit.averaged_params(state)) == {"w": (2,), "b": (1,)}

    groups = optkit.param_groups(
        optkit.asgd, [{"params": "w"}, {"params": "b", "t0": 0.0}], learning_rate=0.1
    )
    state = groups.init(params)
    with pytest.raises(ValueError, match=r"holds 2 .*state\.groups\[i\]"):
        optkit.averaged_params(state)
    assert optkit.averaged_params(state.groups[0])["w"].shape == (2,)


def test_averaged_params_needs_an_asgd_state() -> None:
    state = optkit.sgd(0.1).init(jnp.ones(2))
    with pytest.raises(ValueError, match=r"holds none; build the optimizer with optkit\.asgd"):
        optkit.averaged_params(state)


def test_update_needs_params() -> None:
    tx = optkit.asgd(0.1)
    with pytest.raises(ValueError, match="scale_by_asgd reads the params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
