"""float16 and bfloat16 params follow torch's CPU rounding: one step at a time, within 1 ulp.

For every case of ``half_cases.CASES`` (registry rows and their variants, in float16 and
bfloat16) and every one of its steps, optkit is given torch's params and optimizer state before
the step (``optkit.from_torch_state_dict``) and the same gradient, takes one step, and must land
within 1 ulp of torch's params and state buffers after it. torch computes each op on a 16-bit
tensor in float32 and rounds its result once; optkit rounds at the same points, so the only
extra rounding is the protocol's: ``apply_updates`` adds the rounded update to the params
separately, where torch's last op (``add_``, ``addcdiv_``) rounds once. The gradients hold
entries in the thousands, past float16's ``sqrt(65504)``, so a square formed before its scale
(which overflows) fails here.

The live tests run torch now; the golden tests read ``golden/half_<row>.npz`` (written by
``python -m tests.reliability.generate_half_golden``) and need no torch.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.reliability import half_cases
from tests.reliability.generate_half_golden import load_golden
from tests.reliability.half_cases import ALLOWED_ULPS, CASES, STEPS, HalfCase, Torch
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

TOLERANCE_ULPS = 1
REGENERATE = "regenerate with `python -m tests.reliability.generate_half_golden`"


_MANTISSA_BITS = {"float16": 10, "bfloat16": 7}
_SMALLEST_NORMAL = {"float16": 2.0**-14, "bfloat16": 2.0**-126}


def ulps(actual: Any, expected: Any, dtype: str, scale: Any = 0.0) -> np.ndarray:
    """Per entry, ``|actual - expected|`` in units of the ``dtype`` spacing at the largest of
    ``|actual|``, ``|expected|`` and ``|scale|`` (0 where both are the same infinity or NaN).

    With ``scale = 0`` this counts the representable values between the two. For params,
    ``scale`` is the param before the step: ``apply_updates`` adds a rounded update, whose
    rounding is a fraction of the spacing at the larger of the old and new param, so an update
    that nearly cancels the param costs as many ulps of the small result as its own rounding
    is larger.
    """
    actual, expected = (np.asarray(x, np.float64) for x in (actual, expected))
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    magnitude = np.maximum(np.maximum(np.abs(actual), np.abs(expected)), np.abs(scale))
    exponent = np.floor(np.log2(np.maximum(magnitude, _SMALLEST_NORMAL[dtype])))
    spacing = 2.0 ** (exponent - _MANTISSA_BITS[dtype])
    with np.errstate(invalid="ignore"):
        distance = np.where(same, 0.0, np.abs(actual - expected) / spacing)
    return np.where(np.isfinite(distance), distance, 10**6)


@functools.cache
def _compiled(case: HalfCase):
    """The case's optimizer and its jitted step, shared by the live and golden tests."""
    info = BY_NAME[case.row]
    # Muon's row partitions the leaves between Muon and AdamW, a transform torch's state dict
    # interop refuses; Muon's cases hold matrices only, so they run Muon itself.
    build = (lambda factory, kwargs: factory(**kwargs)) if case.row == "muon" else info.build
    tx = build(info.factory, case.kwargs)

    @jax.jit
    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    return tx, step


def worst_ulps(case: HalfCase, record: Torch) -> dict[str, tuple[int, int]]:
    """Per params leaf and state buffer, the largest ulp distance from torch over every step,
    with the first step that reached it."""
    tx, step = _compiled(case)
    paths = list(case.shapes)
    dtype = jnp.dtype(case.dtype)

    def as_jax(params):
        return {k: jnp.asarray(v, dtype) for k, v in params.items()}

    worst: dict[str, tuple[int, int]] = {}
    for t in range(STEPS):
        params = as_jax(record.params[t])
        state = optkit.from_torch_state_dict(tx, params, record.state_dicts[t], paths)
        grads = as_jax(record.grads[t])
        new_params, new_state = step(grads, state, params)
        expected_params = as_jax(record.params[t + 1])
        expected_state = optkit.from_torch_state_dict(
            tx, expected_params, record.state_dicts[t + 1], paths
        )
        pairs = {f"params/{k}": (new_params[k], expected_params[k], params[k]) for k in paths}
        leaves = jax.tree_util.tree_leaves_with_path(new_state)
        for (path, ours), theirs in zip(leaves, jax.tree.leaves(expected_state), strict=True):
            pairs[f"state{jax.tree_util.keystr(path)}"] = (ours, theirs, 0.0)
        for name, (ours, theirs, scale) in pairs.items():
            if not jnp.issubdtype(ours.dtype, jnp.floating):
                continue  # update counts: torch's SGD and Muon record none to compare with
            if jnp.dtype(ours.dtype) == dtype:
                distance = float(np.max(ulps(ours, theirs, case.dtype, scale), initial=0))
            else:  # float32 scalars torch keeps in float32 (NAdam's mu_product)
                ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
                distance = 0 if np.allclose(ours, theirs, rtol=1e-6) else 10**6
            if distance > worst.get(name, (-1, 0))[0]:
                worst[name] = (distance, t)
    return worst


def check(case: HalfCase, record: Torch) -> None:
    allowed = ALLOWED_ULPS.get(case.id, TOLERANCE_ULPS)
    worst = worst_ulps(case, record)
    if case.id in half_cases.TORCH_BUGS:
        buggy = {n: w for n, w in worst.items() if half_cases.TORCH_BUGS[case.id] in n}
        assert buggy and all(w[0] > allowed for w in buggy.values()), (
            f"{case.id}: torch's {sorted(buggy)} now agree; drop it from half_cases.TORCH_BUGS"
        )
        worst = {n: w for n, w in worst.items() if n not in buggy}
    over = {name: w for name, w in worst.items() if w[0] > allowed}
    assert not over, f"{case.id}: (ulps, step) beyond {allowed} ulp of torch: {over}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_step_within_one_ulp_of_live_torch(case: HalfCase) -> None:
    require_torch()
    check(case, half_cases.run_torch(case))


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_golden()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_step_within_one_ulp_of_golden_torch(case: HalfCase, golden) -> None:
    assert f"{case.id}|spec" in golden, f"no golden record for {case.id}; {REGENERATE}"
    check(case, half_cases.from_arrays(case, golden))


def test_golden_file_holds_the_cases_as_they_are(golden) -> None:
    stored = {key.split("|")[0]: str(v) for key, v in golden.items() if key.endswith("|spec")}
    assert stored == {case.id: case.spec() for case in CASES}, f"stale golden file; {REGENERATE}"
    assert str(golden["torch_version"])


def test_golden_file_is_what_torch_gives_today(golden) -> None:
    require_torch()
    for case in CASES[:4]:
        live = half_cases.to_arrays(case, half_cases.run_torch(case))
        stale = [k for k, v in live.items() if not np.array_equal(golden[k], v)]
        assert not stale, f"{case.id}: golden differs from live torch at {stale[:5]}; {REGENERATE}"
