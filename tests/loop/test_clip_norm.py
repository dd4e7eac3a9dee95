"""clip_by_global_norm and global_norm reproduce torch's clip_grad_norm_ for every norm order.

The tables in tests/loop/clip_cases.py drive every case: trees of every float and complex dtype
(mixed ones too), clipped and untouched, for orders 0.5 to 20 and inf, and short training runs
``clip_grad_norm_(params, 1.0, norm_type=p); opt.step()`` with SGD (momentum) and AdamW. The
golden tests compare with torch's values stored in tests/loop/golden/ and run without torch; the
live tests run torch itself.

Bounds: float64 (and complex128) to 1e-10 relative, float32 (and complex64) to 1e-5; float16 and
bfloat16 to one unit in the last place (2**-10, 2**-7 relative), though on CPU every 16-bit value
measured equals torch's bitwise. In a mixed tree every value depends on the norm of every leaf,
so it is held to the bound of the tree's least precise dtype.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.loop import clip_oracle
from tests.loop.clip_cases import (
    MAX_NORMS,
    TRAIN_CASES,
    TREE_CASES,
    TrainCase,
    TreeCase,
    dtype_of,
    loss,
)
from tests.loop.generate_clip_golden import Golden, load_golden
from tests.support.torch_oracle import require_torch

RTOL = {
    "float64": 1e-10,
    "complex128": 1e-10,
    "float32": 1e-5,
    "complex64": 1e-5,
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
}
TRAIN_ATOL = {"float64": 1e-12, "float32": 1e-6}  # as tests/optimizers/test_parity.py
TREE_IDS = [case.id for case in TREE_CASES]
TRAIN_IDS = [case.id for case in TRAIN_CASES]
Result = tuple[np.ndarray, list[np.ndarray]]


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@functools.cache
def optkit_tree(case: TreeCase) -> list[Result]:
    """Every run of a tree case, from one jitted program: ``global_norm``'s total and the
    clipped leaves, in the order of ``case.runs()``."""
    runs = case.runs()

    @jax.jit
    def clip_every_way(grads: list[jax.Array]) -> list[tuple[jax.Array, list[jax.Array]]]:
        totals = {p: optkit.global_norm(grads, p) for p in case.norm_types}
        results = []
        for _, norm_type, max_norm in runs:
            tx = optkit.clip_by_global_norm(max_norm, norm_type=norm_type)
            clipped, _ = tx.update(grads, tx.init(grads))
            results.append((totals[norm_type], clipped))
        return results

    computed = clip_every_way([jnp.asarray(g) for g in case.grads()])
    return [(np.asarray(total), [np.asarray(g) for g in grads]) for total, grads in computed]


def assert_close(
    actual: np.ndarray, expected: np.ndarray, dtype: str, rtol: float, what: str
) -> None:
    """``actual`` has the dtype ``dtype`` and matches ``expected`` to ``rtol``."""
    assert actual.dtype == dtype_of(dtype), f"{what}: {actual.dtype} != {dtype}"
    wide = np.complex128 if dtype.startswith("complex") else np.float64
    np.testing.assert_allclose(
        actual.astype(wide), np.asarray(expected).astype(wide), rtol=rtol, atol=0, err_msg=what
    )


def assert_matches(case: TreeCase, computed: list[Result], expected: list[Result]) -> None:
    loosest = max(RTOL[dtype] for dtype in case.dtypes)
    for (run, _, _), (total, grads), (want_total, want_grads) in zip(
        case.runs(), computed, expected, strict=True
    ):
        rtol = max(RTOL[case.total_dtype], loosest)
        assert_close(total, want_total, case.total_dtype, rtol, f"{run} total")
        for i, (grad, want, dtype) in enumerate(
            zip(grads, want_grads, case.leaf_dtypes(), strict=True)
        ):
            assert grad.shape == want.shape, f"{run} leaf {i}"
            assert_close(grad, want, dtype, max(RTOL[dtype], loosest), f"{run} leaf {i}")


# --- clipping a tree ----------------------------------------------------------------------------


def test_golden_file_matches_the_case_tables(golden):
    assert sorted(golden.tree_specs) == sorted(TREE_IDS), "regenerate: generate_clip_golden"
    assert sorted(golden.train_specs) == sorted(TRAIN_IDS), "regenerate: generate_clip_golden"
    stale = [c.id for c in TREE_CASES if golden.tree_specs[c.id] != c.torch_spec()]
    stale += [c.id for c in TRAIN_CASES if golden.train_specs[c.id] != c.torch_spec()]
    assert not stale, (
        f"stale golden values for {stale}; run python -m tests.loop.generate_clip_golden"
    )
    for case in TREE_CASES:  # the stored inputs are the ones the table generates
        for stored, generated in zip(golden.grads(case), case.grads(), strict=True):
            np.testing.assert_array_equal(stored, generated)


def test_every_max_norm_is_below_or_above_every_norm(golden):
    # So that each tree runs both torch branches: scaled down, and multiplied by exactly 1.
    for case in TREE_CASES:
        if case.id.startswith("overflow"):
            continue
        totals = [float(total) for total, _ in golden.runs(case)]
        assert all(MAX_NORMS["clipped"] < t < MAX_NORMS["untouched"] for t in totals), case.id


@pytest.mark.parametrize("case", TREE_CASES, ids=TREE_IDS)
def test_matches_torch_golden(case, golden):
    assert_matches(case, optkit_tree(case), golden.runs(case))


def test_large_order_overflows_float32_like_torch(golden):
    # p = 100 on values of a few hundred: torch's float32 norm is inf and every gradient becomes
    # 0; in float64 the same values have a finite norm (near the largest |g|).
    for case_id, finite in (("overflow-float32", False), ("overflow-float64", True)):
        case = next(c for c in TREE_CASES if c.id == case_id)
        for (total, grads), (want_total, _) in zip(
            optkit_tree(case), golden.runs(case), strict=True
        ):
            assert np.isfinite(total) == np.isfinite(want_total) == finite
            if not finite:
                assert all(np.all(g == 0.0) for g in grads)


def test_empty_leaf_has_norm_zero_even_for_inf():
    # torch raises for the inf norm of an empty tensor; every other order gives it norm 0.
    leaves = [jnp.zeros((0, 3)), jnp.array([3.0, -4.0])]
    for norm_type in (0.5, 2.0, math.inf):
        expected = optkit.global_norm(leaves[1:], norm_type)
        assert float(optkit.global_norm(leaves, norm_type)) == float(expected)
    clipped, _ = optkit.clip_by_global_norm(1.0, math.inf).update(leaves, optkit.EmptyState())
    assert clipped[0].shape == (0, 3)
    np.testing.assert_allclose(clipped[1], np.array([3.0, -4.0]) / (4.0 + 1e-6), rtol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("case", TREE_CASES, ids=TREE_IDS)
def test_matches_live_torch(case):
    torch = require_torch()
    expected = clip_oracle.torch_tree(case)
    assert_matches(case, optkit_tree(case), expected)
    # The table's total dtypes are torch's.
    grads = [clip_oracle.to_torch(torch, g) for g in case.grads() if g.size]
    assert str(torch.nn.utils.get_total_norm(grads, 2.0).dtype) == f"torch.{case.total_dtype}"


# --- training runs ------------------------------------------------------------------------------

_OPTKIT = {"SGD": optkit.sgd, "AdamW": optkit.adamw}


def optkit_train(case: TrainCase) -> tuple[np.ndarray, np.ndarray]:
    """The params after each step (flattened, one row per step) and the global norm of each
    step's gradients, from one jitted scan (run once per case: the golden and live tests share
    it)."""
    return _optkit_train(case.id)


@functools.cache
def _optkit_train(case_id: str) -> tuple[np.ndarray, np.ndarray]:
    case = next(c for c in TRAIN_CASES if c.id == case_id)
    start, targets = case.start()
    kwargs = {"learning_rate" if k == "lr" else k: v for k, v in case.kwargs.items()}
    tx = optkit.chain(
        optkit.clip_by_global_norm(case.max_norm, norm_type=case.norm_type),
        _OPTKIT[case.optimizer](**kwargs),
    )

    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss)(params, targets, jnp)
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)
        flat = jnp.concatenate([p.ravel() for p in params])
        return (params, state), (flat, optkit.global_norm(grads, case.norm_type))

    @jax.jit
    def run(params):
        return jax.lax.scan(step, (params, tx.init(params)), length=case.steps)[1]

    trajectory, norms = run([jnp.asarray(p) for p in start])
    assert trajectory.dtype == dtype_of(case.dtype)
    return np.asarray(trajectory), np.asarray(norms)


def assert_train_matches(case: TrainCase, expected: tuple[np.ndarray, np.ndarray]) -> None:
    trajectory, norms = optkit_train(case)
    want_trajectory, want_norms = expected
    assert want_norms.min() > 2 * case.max_norm  # the clip bites at every step
    rtol = RTOL[case.dtype]
    np.testing.assert_allclose(norms, want_norms, rtol=rtol, atol=0, err_msg=f"{case.id} norms")
    # Params of order 1 that pass near 0 are held to the parity suite's absolute bound there.
    atol = TRAIN_ATOL[case.dtype]
    np.testing.assert_allclose(trajectory, want_trajectory, rtol=rtol, atol=atol, err_msg=case.id)


@pytest.mark.parametrize("case", TRAIN_CASES, ids=TRAIN_IDS)
def test_training_matches_torch_golden(case, golden):
    assert_train_matches(case, golden.train(case.id))


@pytest.mark.torch
@pytest.mark.parametrize("case", TRAIN_CASES, ids=TRAIN_IDS)
def test_training_matches_live_torch(case):
    require_torch()
    assert_train_matches(case, clip_oracle.torch_train(case))
