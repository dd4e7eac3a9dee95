"""float16 and bfloat16 L-BFGS follows torch step by step (issue #15's 16-bit check).

For every case of ``half_lbfgs.CASES`` and every step, optkit's ``lbfgs(max_iter=1)`` is given
torch's params and LBFGS state before the step, the gradient and loss torch's closure gave, and
takes one update; the params after it must be within :data:`ALLOWED_ULPS` of torch's (ulps as
the row suite counts them, at the larger of the old and new param). The live test runs torch
now; the golden test reads ``golden/lbfgs16.npz`` (``python -m tests.reliability.half_lbfgs``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.reliability import half_lbfgs
from tests.reliability.half_lbfgs import CASES, STEPS, LbfgsCase
from tests.reliability.test_half_precision import ulps
from tests.support.torch_oracle import require_torch

# Measured worst ulps over the steps (torch 2.13 CPU, x86), per case: not 1 ulp. optkit rounds
# where torch's ops round (dots and sums accumulated in float32 and rounded once, each 0-dim op
# rounded), but torch's CPU ``add_(other, alpha=a)`` on a 16-bit tensor rounds two ways: its
# vectorized body computes ``self + a * other`` in float32 with ``a`` rounded to the dtype and
# rounds once (as optkit does), while its scalar tail (every element of a tensor shorter than
# the vector width, as these 8-entry params are) rounds ``a * other`` to the dtype first. The
# two-loop recursion's ``q.add_`` and ``r.add_`` then differ by an ulp of the product, which
# the direction carries into the step. Which elements take which path depends on the CPU's
# vector width, so optkit does not reproduce it; lower an entry when it is measured lower.
ALLOWED_ULPS: dict[str, float] = {
    "lbfgs-plain-float16": 9.0,
    "lbfgs-plain-bfloat16": 9.0,
    "lbfgs-short_history-float16": 2.0,
    "lbfgs-short_history-bfloat16": 2.0,
}
TOLERANCE_ULPS = 1


@functools.cache
def _compiled(case: LbfgsCase):
    tx = optkit.lbfgs(learning_rate=case.lr, max_iter=1, history_size=case.history_size)

    def loss_fn(params):  # never evaluated: a 1-iteration update does not call the closure
        return sum(jnp.sum(v) for v in params.values())

    @jax.jit
    def step(grads, state, params, loss):
        updates, state = tx.update(grads, state, params, value=loss, value_fn=loss_fn)
        return optkit.apply_updates(params, updates), state

    return tx, step


def worst_ulps(case: LbfgsCase, record: dict[str, np.ndarray]) -> list[float]:
    """Per step, the largest ulp distance between optkit's and torch's params after it."""
    tx, step = _compiled(case)
    dtype = jnp.dtype(case.dtype)
    as_jax = lambda flat: {k: jnp.asarray(v, dtype) for k, v in half_lbfgs.split(flat).items()}
    worst = []
    for t in range(STEPS):
        params = as_jax(record[f"x|{t}"])
        state = half_lbfgs.to_optkit_state(tx, params, record, t - 1)
        grads = as_jax(record[f"g|{t}"])
        new_params, _ = step(grads, state, params, jnp.asarray(record[f"loss|{t}"], dtype))
        expected = record[f"x|{t + 1}"]
        ours = np.concatenate([np.asarray(new_params[k], np.float32).ravel() for k in params])
        worst.append(float(np.max(ulps(ours, expected, case.dtype, record[f"x|{t}"]))))
    return worst


def check(case: LbfgsCase, record: dict[str, np.ndarray]) -> None:
    allowed = ALLOWED_ULPS.get(case.id, TOLERANCE_ULPS)
    worst = worst_ulps(case, record)
    assert max(worst) <= allowed, f"{case.id}: per-step ulps {worst} beyond {allowed}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_step_within_allowance_of_live_torch(case: LbfgsCase) -> None:
    require_torch()
    check(case, half_lbfgs.run_torch(case))


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(half_lbfgs.GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_step_within_allowance_of_golden_torch(case: LbfgsCase, golden) -> None:
    assert str(golden[f"{case.id}|spec"]) == case.spec(), "stale golden; run half_lbfgs"
    prefix = f"{case.id}|"
    check(case, {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)})
