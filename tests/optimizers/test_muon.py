"""Muon beyond the generic suites.

* The bfloat16 Newton-Schulz iteration against torch's own ``_zeropower_via_newtonschulz``, bit
  for bit wherever torch uses its reference kernels (square, tall, wide, one-row and one-column
  matrices; inputs whose exponents spread wide, so that the order of every float32 sum shows),
  and the rounding points of oneDNN-sized products.
* Its float32 pieces against exact arithmetic: the fused multiply-add emulation, ``lerp``.
* The 2-D rule: clear errors naming the leaf, under ``optkit.flatten`` too, and the Muon + AdamW
  pattern of the docs against torch's pair of optimizers.

Expected values come from torch, from long-double arithmetic or from the formulas, never from
optkit itself.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import optkit
from optkit import _numerics
from optkit.optimizers import _newton_schulz as ns
from optkit.optimizers.muon import NS_COEFFICIENTS, lr_ratio
from tests.support.torch_oracle import require_torch

BF16 = ml_dtypes.bfloat16


@functools.partial(jax.jit, static_argnames=("coefficients", "steps"))
def newton_schulz(update, eps, *, coefficients=NS_COEFFICIENTS, steps=5):
    return ns.newton_schulz(update, coefficients=coefficients, steps=steps, eps=eps)


def torch_newton_schulz(update: np.ndarray, coefficients, steps: int, eps: float) -> np.ndarray:
    torch = require_torch()
    from torch.optim._muon import _zeropower_via_newtonschulz

    return _zeropower_via_newtonschulz(torch.from_numpy(update), coefficients, steps, eps).float()


def spread(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Entries whose exponents span 2**-12 to 2**12: float32 sums then round differently in
    different orders, so only torch's order agrees."""
    return rng.normal(size=shape) * 2.0 ** rng.integers(-12, 12, size=shape)


# Every reference-kernel layout torch picks (tall matrices start as a transposed view), the
# vectorized dot's blocks of 16 and 64 and its leftovers, single rows and columns.
REFERENCE_SHAPES = [
    (4, 4), (6, 3), (3, 6), (2, 8), (8, 2), (1, 1), (1, 7), (7, 1), (5, 9), (9, 5), (16, 16),
    (3, 100), (100, 3), (10, 40), (40, 10), (2, 1024), (1, 4096),
]  # fmt: skip


@pytest.mark.torch
@pytest.mark.parametrize("shape", REFERENCE_SHAPES, ids=str)
def test_newton_schulz_is_torchs_bit_for_bit(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    for dtype in (np.float32, np.float64):
        for update in (rng.normal(size=shape).astype(dtype), spread(rng, shape).astype(dtype)):
            expected = torch_newton_schulz(update, NS_COEFFICIENTS, 5, 1e-7)
            got = newton_schulz(jnp.asarray(update), 1e-7)
            assert got.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(got, np.float32), expected)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("coefficients", "steps", "eps", "scale"),
    [
        ((1.5, -0.5, 0.0), 5, 1e-7, 1.0),  # the cubic iteration: alpha = 0 in one addmm
        ((2.0, -1.5, 0.5), 3, 1e-3, 1.0),
        ((3.4445, -4.775, 2.0315), 0, 1e-7, 1.0),  # just the normalization
        ((3.4445, -4.775, 2.0315), 99, 1e-7, 1.0),
        ((3.4445, -4.775, 2.0315), 5, 1e-7, 0.0),  # zero gradient: the eps clamp
        ((3.4445, -4.775, 2.0315), 5, 1e-3, 1e-5),  # norm below eps
    ],
)
def test_newton_schulz_settings_match_torch(coefficients, steps, eps, scale) -> None:
    rng = np.random.default_rng(7)
    for shape in ((4, 4), (6, 3), (3, 6)):
        update = rng.normal(size=shape) * scale
        expected = torch_newton_schulz(update, coefficients, steps, eps)
        got = newton_schulz(jnp.asarray(update), eps, coefficients=coefficients, steps=steps)
        np.testing.assert_array_equal(np.asarray(got, np.float32), expected)


def test_newton_schulz_of_an_empty_matrix_is_empty() -> None:
    assert newton_schulz(jnp.zeros((0, 3)), 1e-7).shape == (0, 3)


def boundary_rows(rng: np.random.Generator, rows: int, inner: int) -> np.ndarray:
    """bfloat16 rows of a 1, a 2**-8 (together half a bfloat16 step above 1) and terms of
    +-2**-25 or 2**-26, each lost when added to 1 in float32 but not when added to each other:
    every sum sits on a rounding boundary, on the side its order of additions decides."""
    size = (rows, inner)
    matrix = rng.choice([2.0**-25, 2.0**-26], size) * rng.choice([-1.0, 1.0, 1.0], size)
    for row in matrix:
        big = rng.choice(inner, size=min(2, inner), replace=False)
        row[big] = [1.0, 2.0**-8][: len(big)]
    return matrix.astype(BF16)


TORCH_VIEWS = {"notrans": (False, False), "transa": (False, True), "transb": (True, False)}


@pytest.mark.torch
@pytest.mark.parametrize("kind", list(TORCH_VIEWS))
@pytest.mark.parametrize("inner", [3, 7, 8, 17, 40, 100, 300, 1000])
def test_reference_kernels_sum_in_torchs_order(kind, inner) -> None:
    """Each of torch's reference kernels (chosen by the operands' layout: contiguous, or a
    transposed view) adds a product's terms in its own order; on sums that sit on bfloat16
    rounding boundaries only that order gives torch's bits."""
    torch = require_torch()
    rng = np.random.default_rng(inner)
    rows = cols = min(8, int(np.sqrt(ns.REFERENCE_KERNEL_MAX / inner)))
    left_view, right_view = TORCH_VIEWS[kind]
    left = boundary_rows(rng, rows, inner)
    right = rng.choice([-1.0, 1.0], (inner, cols)).astype(BF16)
    a, b = ns.Operand(jnp.asarray(left), left_view), ns.Operand(jnp.asarray(right), right_view)
    assert ns.gemm_kind(a, b) == kind

    def as_torch(x: np.ndarray, view: bool):
        t = torch.from_numpy(x.astype(np.float32)).bfloat16()
        return t.T.contiguous().T if view else t

    expected = (as_torch(left, left_view) @ as_torch(right, right_view)).float().numpy()
    got = jax.jit(lambda: ns.addmm(None, a, b, beta=0.0, alpha=1.0).value)()
    np.testing.assert_array_equal(np.asarray(got, np.float32), expected)


def fused_boundary_addends(
    rng: np.random.Generator, scaled: np.ndarray, beta: np.float32
) -> tuple[np.ndarray, int]:
    """A bfloat16 ``C`` entry per float32 ``scaled`` entry, picked among those that nearly cancel
    it, where ``round(beta * C + scaled)`` and ``round(round(beta * C) + scaled)`` round to
    different bfloat16 numbers (when one exists), and how many were found."""
    c = np.empty(scaled.size, np.float32)
    found = 0
    for i, t in enumerate(scaled.reshape(-1)):
        center = np.asarray(-t / beta, np.float32).astype(BF16).view(np.uint16)
        bits = np.arange(int(center) - 64, int(center) + 65)
        bits = bits[(bits >= 0) & (bits < 2**16) & ((bits ^ int(center)) < 2**15)]
        candidates = bits.astype(np.uint16).view(BF16).astype(np.float32)
        once = (np.longdouble(beta) * candidates + t).astype(np.float32).astype(BF16)
        twice = (beta * candidates + t).astype(np.float32).astype(BF16)
        differ = np.flatnonzero(once != twice)
        found += bool(differ.size)
        c[i] = candidates[rng.choice(differ)] if differ.size else candidates[0]
    return c.reshape(scaled.shape).astype(BF16), found


@pytest.mark.torch
@pytest.mark.parametrize(("rows", "cols"), [(64, 64), (80, 80)], ids=["reference", "onednn"])
def test_products_combine_with_one_fused_rounding(rows, cols) -> None:
    """``beta * C + alpha * (A @ B)`` is ``fma(beta, C, round(alpha * dot))`` in both of torch's
    paths (one inner term, so the dot is exact; 64 x 64 stays within the reference kernels),
    checked on ``C`` entries where one rounding and two give different bfloat16 results."""
    torch = require_torch()
    rng = np.random.default_rng(rows)
    beta, alpha = np.float32(NS_COEFFICIENTS[1]), np.float32(NS_COEFFICIENTS[2])
    left = rng.normal(size=(rows, 1)).astype(BF16)
    right = rng.normal(size=(1, cols)).astype(BF16)
    scaled = alpha * (left.astype(np.float32) @ right.astype(np.float32))
    c, found = fused_boundary_addends(rng, scaled, beta)
    assert found >= 20, "too few entries where the rounding would show"
    as_torch = lambda x: torch.from_numpy(x.astype(np.float32)).bfloat16()
    expected = torch.addmm(as_torch(c), as_torch(left), as_torch(right), beta=beta, alpha=alpha)

    def addmm(c, a, b):
        operands = (ns.Operand(c), ns.Operand(a), ns.Operand(b))
        return ns.addmm(*operands, beta=float(beta), alpha=float(alpha)).value

    got = jax.jit(addmm)(jnp.asarray(c), jnp.asarray(left), jnp.asarray(right))
    np.testing.assert_array_equal(np.asarray(got, np.float32), expected.float().numpy())


@pytest.mark.torch
@pytest.mark.parametrize(
    ("rows", "inner", "cols", "view"),
    [(32, 64, 32, "plain"), (32, 32, 64, "left"), (64, 256, 64, "right"), (17, 300, 17, "right")],
)
def test_onednn_sized_products_round_like_torch(rows, inner, cols, view) -> None:
    """Above 16**3 multiply-adds torch calls oneDNN, whose float32 summation order belongs to
    the CPU's kernels: the rounding points must agree exactly (every entry within one bfloat16
    step), and the sums themselves in all but rare entries."""
    torch = require_torch()
    rng = np.random.default_rng(rows + inner + cols)
    left, right, c = (
        rng.normal(size=s).astype(BF16) for s in ((rows, inner), (inner, cols), (rows, cols))
    )

    def as_torch(x: np.ndarray, transposed: bool):
        t = torch.from_numpy(x.astype(np.float32)).bfloat16()
        return t.T.contiguous().T if transposed else t

    expected = torch.addmm(
        as_torch(c, False),
        as_torch(left, view == "left"),
        as_torch(right, view == "right"),
        beta=NS_COEFFICIENTS[1],
        alpha=NS_COEFFICIENTS[2],
    ).float()

    def addmm(c, a, b):
        a = ns.Operand(a, view == "left")
        b = ns.Operand(b, view == "right")
        beta, alpha = NS_COEFFICIENTS[1], NS_COEFFICIENTS[2]
        return ns.addmm(ns.Operand(c), a, b, beta=beta, alpha=alpha).value

    got = jax.jit(addmm)(jnp.asarray(c), jnp.asarray(left), jnp.asarray(right))
    got, expected = np.asarray(got, np.float32), expected.numpy()
    magnitude = np.abs(expected).astype(BF16)
    step = np.nextafter(magnitude, BF16(np.inf)).astype(np.float32) - magnitude.astype(np.float32)
    assert np.all(np.abs(got - expected) <= step)
    assert np.mean(got == expected) >= 0.999


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(47, 24), (24, 47), (60, 70)])
def test_norm_sums_in_torchs_order(shape) -> None:
    """Matrices whose exact sum of squares sits on a bfloat16 rounding boundary of the norm:
    which side the float32 sum lands on depends on its order."""
    torch = require_torch()
    rng = np.random.default_rng(shape[0])
    frobenius_norm = jax.jit(ns.frobenius_norm)
    for _ in range(20):
        big = rng.normal(size=shape[0] * shape[1] - 64).astype(BF16).astype(np.float64)
        total = np.sum(big**2)
        norm = float(np.float32(np.sqrt(total)).astype(BF16))
        boundary = (norm + float(np.nextafter(BF16(norm), BF16(np.inf)))) / 2
        tiny = float(BF16(np.sqrt(max(boundary**2 - total, 0.0) / 64)))
        matrix = np.concatenate([big, np.full(64, tiny)])
        rng.shuffle(matrix)
        matrix = matrix.reshape(shape).astype(BF16)
        expected = torch.from_numpy(matrix.astype(np.float32)).bfloat16().norm().float()
        assert float(frobenius_norm(jnp.asarray(matrix))) == float(expected)


def test_fused_multiply_add_rounds_once() -> None:
    """Against long double, which holds a float32 product and sum exactly before one rounding;
    addends near ``-scale * x`` cancel, where rounding twice goes wrong most often."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=20000) * 2.0 ** rng.integers(-8, 8, size=20000)).astype(BF16)
    x = x.astype(np.float32)
    for scale in (-4.775, 2.0315, 3.4445, 0.1):
        product = np.float32(scale) * x.astype(np.float64)
        for addend in (
            rng.normal(size=x.size).astype(np.float32),
            (-product * (1 + rng.normal(size=x.size) * 1e-6)).astype(np.float32),
        ):
            exact = np.longdouble(np.float32(scale)) * x.astype(np.longdouble) + addend
            got = jax.jit(lambda x, t, scale=scale: ns.fma(scale, x, t))(x, addend)
            np.testing.assert_array_equal(np.asarray(got), exact.astype(np.float32))


@pytest.mark.torch
@pytest.mark.parametrize("weight", [0.0, 0.05, 0.4, 0.5, 0.6, 0.95, 1.0])
def test_lerp_is_torchs_for_small_and_large_weights(weight) -> None:
    """torch's CPU lerp switches formula at ``|weight| = 0.5``; both, for a Python and an array
    weight (the injected momentum)."""
    torch = require_torch()
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        start, end = (rng.normal(size=37).astype(dtype) for _ in range(2))
        expected = torch.from_numpy(start).lerp(torch.from_numpy(end), weight).numpy()
        static = jax.jit(lambda s, e: _numerics.lerp(s, e, weight))(start, end)
        traced = jax.jit(_numerics.lerp)(start, end, jnp.asarray(weight, dtype))
        np.testing.assert_array_equal(np.asarray(static), expected)
        np.testing.assert_array_equal(np.asarray(traced), expected)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (1, 9), (9, 1), (300, 20)])
@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw"])
def test_lr_ratio_is_torchs(shape, adjust_lr_fn) -> None:
    require_torch()
    from torch.optim._muon import _adjust_lr

    assert lr_ratio(adjust_lr_fn, shape) == _adjust_lr(1.0, adjust_lr_fn, shape)


# --- the 2-D rule --------------------------------------------------------------------------


def test_non_matrix_leaf_is_named_with_the_way_out() -> None:
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    with pytest.raises(ValueError, match=r"leaf 'dense/bias' has shape \(2,\)") as error:
        optkit.muon().init(params)
    assert "optkit.partition" in str(error.value)
    tx = optkit.muon()
    state = tx.init({"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match=r"leaf 'w' has shape \(2, 2, 1\)"):
        tx.update({"w": jnp.ones((2, 2, 1))}, state)


@pytest.mark.parametrize("max_flat_size", [None, 1], ids=["concatenated", "kept_whole"])
def test_flatten_cannot_hold_muon_and_says_why(max_flat_size) -> None:
    # Concatenated, the matrices would be one 1-D vector; kept whole (larger than max_flat_size)
    # they are still matrices, but flatten is refused either way, with the same reason.
    tx = optkit.flatten(optkit.muon(), max_flat_size=max_flat_size)
    with pytest.raises(ValueError, match=r"scale_by_muon cannot run inside optkit\.flatten"):
        tx.init({"w": jnp.ones((2, 3), jnp.float32), "v": jnp.ones((2, 2), jnp.float32)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ns_steps": 100}, "ns_steps must be an integer in [0, 99], got 100"),
        ({"ns_steps": 2.0}, "ns_steps must be an integer in [0, 99], got 2.0"),
        ({"ns_coefficients": (1.0, 2.0)}, "ns_coefficients must be a tuple of three"),
        ({"ns_coefficients": (1.0, 2.0, float("nan"))}, "ns_coefficients must be a tuple"),
        ({"ns_coefficients": "abc"}, "ns_coefficients must be a tuple of three"),
        ({"adjust_lr_fn": "rms"}, "adjust_lr_fn must be None, 'original' or 'match_rms_adamw'"),
        ({"momentum": -0.1}, "momentum must be in [0.0, inf]"),
        ({"eps": -1.0}, "eps must be in [0.0, inf]"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        optkit.muon(**kwargs)


def test_ns_steps_stays_static_under_inject_hyperparams() -> None:
    tx = optkit.inject_hyperparams(optkit.muon)(learning_rate=0.02, ns_steps=3)
    held = set(optkit.get_hyperparams(tx.init({"w": jnp.ones((2, 3))})))
    # Every numeric argument is held, defaults included, but the loop count stays static.
    assert held == {"learning_rate", "weight_decay", "momentum", "eps"}


@pytest.mark.torch
def test_muon_and_adamw_pattern_matches_torchs_pair() -> None:
    """The docs' pattern, Muon on the matrices and AdamW on the rest through optkit.partition, is
    torch's Muon and AdamW stepping their own parameters (float64, 20 steps), momentum buffers
    included."""
    torch = require_torch()
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(16, 2))
    start = {
        "hidden": {"kernel": rng.normal(size=(5, 8)), "bias": rng.normal(size=(8,))},
        "out": {"kernel": rng.normal(size=(8, 2)), "bias": rng.normal(size=(2,))},
        "scale": rng.normal(size=()),
    }

    def loss(p, x, y, xp):
        hidden = xp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        out = (hidden @ p["out"]["kernel"] + p["out"]["bias"]) * p["scale"]
        return xp.mean((out - y) ** 2)

    labels = lambda params: jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adamw", params)
    tx = optkit.partition(
        {"muon": optkit.muon(0.02, nesterov=False), "adamw": optkit.adamw(0.01)}, labels
    )
    params = jax.tree.map(jnp.asarray, start)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p, x, y, jnp), s, p))
    for _ in range(20):
        updates, state = step(params, state)
        params = optkit.apply_updates(params, updates)

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in _flat(start).items()}
    matrices = [leaf for leaf in leaves.values() if leaf.ndim == 2]
    muon = torch.optim.Muon(matrices, lr=0.02, nesterov=False)
    adamw = torch.optim.AdamW([leaf for leaf in leaves.values() if leaf.ndim != 2], lr=0.01)
    for _ in range(20):
        muon.zero_grad()
        adamw.zero_grad()
        loss(_nested(leaves), torch.from_numpy(x), torch.from_numpy(y), torch).backward()
        muon.step()
        adamw.step()

    for name, value in _flat(params).items():
        np.testing.assert_allclose(value, leaves[name].detach().numpy(), rtol=1e-10, atol=1e-12)
    buffers = state.inner_states["muon"].inner_state[0].momentum_buffer
    for name, value in _flat(buffers).items():
        torch_buffer = muon.state[leaves[name]]["momentum_buffer"].numpy()
        np.testing.assert_allclose(value, torch_buffer, rtol=1e-10, atol=1e-12)


def _flat(tree) -> dict[str, np.ndarray]:
    from optkit import _tree

    return {path: np.asarray(leaf) for path, leaf in _tree.leaves_with_paths(tree)}


def _nested(leaves):
    return {
        "hidden": {"kernel": leaves["hidden/kernel"], "bias": leaves["hidden/bias"]},
        "out": {"kernel": leaves["out/kernel"], "bias": leaves["out/bias"]},
        "scale": leaves["scale"],
    }
