"""RAdam beyond the generic suites: both branches of the rectification switch, in one program.

The switch ``rho_t > 5`` is decided per step; the parity variants must run both branches in their
30 steps, or a wrong branch would pass unnoticed. Expected values come from torch's formulas
evaluated here in Python double, from the update rule worked out by hand, or from torch itself.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit.optimizers.radam import _rectification
from tests.parity.cases import cases_for
from tests.parity.runner import DTYPES, STEPS, compare, run_optkit, run_torch
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

RADAM = BY_NAME["radam"]


def torch_rho(b2: float, step: int) -> float:
    """torch's rho_t (``_single_tensor_radam``), in Python double."""
    rho_infinity = 2 / (1 - b2) - 1
    return rho_infinity - 2 * step * (b2**step) / (1 - b2**step)


def torch_rectification(b2: float, step: int) -> float:
    rho, rho_infinity = torch_rho(b2, step), 2 / (1 - b2) - 1
    return math.sqrt(
        (rho - 4) * (rho - 2) * rho_infinity / ((rho_infinity - 4) * (rho_infinity - 2) * rho)
    )


def parity_b2s() -> dict[str, float]:
    """Every b2 a radam parity case runs with: each variant's, and the second param group's."""
    b2s = {name: kwargs.get("b2", RADAM.default("b2")) for name, kwargs in RADAM.variants.items()}
    first = next(iter(RADAM.variants.values()))
    b2s["param_groups"] = RADAM.group_overrides.get("b2", first.get("b2", RADAM.default("b2")))
    return b2s


@pytest.mark.parametrize(("variant", "b2"), list(parity_b2s().items()))
def test_parity_runs_both_branches(variant, b2):
    rectified = [torch_rho(b2, t) > 5 for t in range(1, STEPS + 1)]
    assert not all(rectified) and any(rectified), f"{variant}: rectified steps {rectified}"
    # SGD-with-momentum steps first, then rectified Adam steps (rho_t grows with t).
    assert rectified == sorted(rectified)


@pytest.mark.parametrize("b2", [*sorted(set(parity_b2s().values())), 0.6, 0.9999, 0.99999])
def test_switch_and_term_follow_torchs_formula(b2):
    steps = jnp.arange(1, 101, dtype=jnp.int32)
    rectify, term = jax.vmap(lambda t: _rectification(b2, t))(steps)
    for t, on, r in zip(range(1, 101), np.asarray(rectify), np.asarray(term), strict=True):
        assert bool(on) == (torch_rho(b2, t) > 5), t
        if on:
            assert math.isclose(float(r), torch_rectification(b2, t), rel_tol=1e-14), t


def test_default_b2_rectifies_from_step_6():
    assert [torch_rho(0.999, t) > 5 for t in range(1, 8)] == [False] * 5 + [True] * 2


def test_one_compiled_step_runs_both_branches():
    """Steps 1-5 are -lr * m_hat; from step 6 on, -lr * m_hat * sqrt(bc2) / (sqrt(v) + eps) * r_t.
    A Python branch on the step would not trace; one trace must serve all ten steps."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    tx = optkit.radam(learning_rate=lr, b1=b1, b2=b2, eps=eps)
    traces = 0

    @jax.jit
    def update(grads, state):
        nonlocal traces
        traces += 1
        return tx.update(grads, state)

    state = tx.init(jnp.zeros(3, jnp.float64))
    m = v = np.zeros(3)
    for t in range(1, 11):
        g = np.array([0.5, -2.0, 3.0]) * (1 + 0.1 * t)
        updates, state = update(jnp.asarray(g), state)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        if t <= 5:
            expected = -lr * m_hat
        else:
            adaptive = math.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
            expected = -lr * m_hat * adaptive * torch_rectification(b2, t)
        np.testing.assert_allclose(updates, expected, rtol=1e-12, err_msg=f"step {t}")
    assert traces == 1


@pytest.mark.torch
def test_float64_parity_with_b2_close_to_one():
    """rho_t is a small difference of numbers near rho_inf = 2e5 at b2 = 0.99999: computed more
    accurately than torch's Python double formula, r_t would move by ~1e-8 from torch's."""
    require_torch()
    variants = {"b2_close_to_one": {"learning_rate": 0.02, "b2": 0.99999}}
    (case, *_) = cases_for(dataclasses.replace(RADAM, variants=variants))
    steps = 60
    rectified = [torch_rho(0.99999, t) > 5 for t in range(1, steps + 1)]
    assert any(rectified) and not all(rectified)
    mismatch = compare(
        run_optkit(case, DTYPES["float64"], steps=steps),
        run_torch(case, DTYPES["float64"], steps=steps),
        rtol=1e-10,
        atol=1e-12,
    )
    assert mismatch is None, str(mismatch)


def test_decoupled_decay_shrinks_by_lr_times_wd_before_the_step():
    """RAdamW: with a zero gradient the moments stay zero and only the shrink is left."""
    params = jnp.array([2.0, -4.0], jnp.float64)
    tx = optkit.radam(learning_rate=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    updates, _ = tx.update(jnp.zeros(2, jnp.float64), tx.init(params), params)
    np.testing.assert_allclose(optkit.apply_updates(params, updates), params * (1 - 0.1 * 0.5))


def test_coupled_decay_is_a_gradient_term():
    """L2: with a zero gradient the first (unrectified) step is -lr * wd * p."""
    params = jnp.array([2.0, -4.0], jnp.float64)
    tx = optkit.radam(learning_rate=0.1, weight_decay=0.5)
    updates, _ = tx.update(jnp.zeros(2, jnp.float64), tx.init(params), params)
    np.testing.assert_allclose(updates, -0.1 * 0.5 * params, rtol=1e-15)
