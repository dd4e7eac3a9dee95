"""Newton-Schulz orthogonalization in bfloat16, rounded where and as torch's CPU kernels round it.

``torch.optim.Muon`` orthogonalizes each update with ``_zeropower_via_newtonschulz``, in
bfloat16: one rounding error there is 2**-9 of the value, so agreeing with torch means rounding
at torch's points and, wherever a float32 result lands next to a bfloat16 rounding boundary,
having computed the same float32 result. This module reproduces both, as measured against torch
2.13 on x86-64 (ATen's AVX2 kernels; oneDNN on a CPU with AMX):

* **casts**: the update is rounded to bfloat16 (float64 through float32, as torch converts);
  the norm, the clamp to ``eps`` (in bfloat16), the division and every matmul compute in
  float32 and round their result to bfloat16 once.
* **the norm**: torch's vectorized sum of squares runs over the matrix in memory order (the
  untransposed gradient, tall matrices too): 8 float32 lanes accumulate every 8th square of each
  16-entry chunk, the lanes are then added in order, then the leftover squares one by one.
* **matmuls** (``addmm``: ``beta * C + alpha * (A @ B)``): a product of two bfloat16 numbers is
  exact in float32, so only the order of the float32 additions and the final combination
  matter. torch calls oneDNN above 16**3 multiply-adds and ATen's reference kernels at or below.
  The reference kernel depends on the operands' memory layout (a tall matrix is a transposed
  view in the first iteration) and each sums in its own order: four interleaved partial sums,
  an AVX2 dot product (8 registers of 8 lanes), or one running sum. All of them, and oneDNN,
  combine as one fused multiply-add, ``fma(beta, C, round(alpha * dot))``.

The reference kernels' orders are reproduced exactly, so an iteration whose products stay within
16**3 multiply-adds (every parity problem; matrices up to 16 x 16, 10 x 40, 2 x 1024) comes out
bit for bit as torch's. Above that, XLA's bfloat16 dot on row-major operands stands in for
oneDNN: same rounding points, and the same float32 sums in every case measured with inner
dimensions up to 256 (128 x 128, 64 x 256, 256 x 256); with an inner dimension of 300 a few
entries in 10**5 came out one bfloat16 step apart, which the iteration then carries on. That
agreement depends on both libraries' kernels for the CPU at hand, so it is measured, not
guaranteed.

The fused multiply-add is computed exactly with error-free transformations (Boldo and
Melquiond's emulation through rounding to odd), not left to whether XLA contracts ``a * b + c``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BF16 = jnp.bfloat16
F32 = jnp.float32

# torch hands a bfloat16 matmul to oneDNN above this many multiply-adds (rows * inner * columns),
# and to ATen's reference kernels at or below it.
REFERENCE_KERNEL_MAX = 16**3
# Sequential sums of more terms than this run in a lax.scan, this many additions per iteration.
_UNROLL = 16


class Operand(NamedTuple):
    """A bfloat16 matrix and how torch holds it: contiguous, or a transposed view of a
    contiguous matrix (its strides decide which reference kernel torch picks)."""

    value: jax.Array
    transposed: bool = False

    @property
    def T(self) -> Operand:
        return Operand(self.value.T, not self.transposed)

    def strides(self) -> tuple[int, int]:
        rows, cols = self.value.shape
        return (1, max(rows, 1)) if self.transposed else (max(cols, 1), 1)


# --- error-free float32 arithmetic -------------------------------------------------------------


def _barrier(x: jax.Array) -> jax.Array:
    """``x`` as computed: XLA may not contract the multiply that made it into a later add."""
    return jax.lax.optimization_barrier(x)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ``s = round(a + b)`` and ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    return s, (a - a_virtual) + (b - b_virtual)


def _add_round_to_odd(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a + b`` rounded to odd: exact sums stay, inexact ones take the odd neighbour."""
    s, e = _two_sum(a, b)
    even = (jax.lax.bitcast_convert_type(s, jnp.uint32) & 1) == 0
    toward = jnp.where(e > 0, jnp.inf, -jnp.inf).astype(F32)
    return jnp.where((e != 0) & even, jnp.nextafter(s, toward), s)


def _split(scale: float) -> tuple[np.float32, np.float32]:
    """A float32 constant as ``high + low``: 16 and 8 significant bits, so either times a
    bfloat16 number is exact in float32."""
    value = np.float32(scale)
    high = (value.view(np.uint32) & np.uint32(0xFFFFFF00)).view(np.float32)
    return high, np.float32(value - high)


def fma(scale: float, x: jax.Array, addend: jax.Array) -> jax.Array:
    """``round(float32(scale) * x + addend)`` with one rounding, for bfloat16-valued float32 ``x``.

    The product is split exactly in two (see :func:`_split`), then added to ``addend`` with
    Boldo and Melquiond's correctly rounded sum (two error-free sums, the low parts added with
    rounding to odd, one final rounding).
    """
    high, low = _split(scale)
    product, product_error = _two_sum(high * x, low * x)
    head, tail = _two_sum(addend, product)
    return head + _add_round_to_odd(tail, product_error)


# --- summation orders ---------------------------------------------------------------------------


def _running_sum(total: jax.Array, terms: jax.Array) -> jax.Array:
    """``total + terms[0] + terms[1] + ...``, one float32 rounding after each addition."""
    if terms.shape[0] <= _UNROLL:
        for term in terms:
            total = total + term
        return total
    return jax.lax.scan(lambda acc, term: (acc + term, None), total, terms, unroll=_UNROLL)[0]


def _lane_sum(lanes: jax.Array) -> jax.Array:
    """torch's ``vec_reduce_all`` over the leading axis of 8 AVX2 lanes: halves added in turn."""
    while lanes.shape[0] > 1:
        half = lanes.shape[0] // 2
        lanes = lanes[:half] + lanes[half:]
    return lanes[0]


def _interleaved_sum(products: jax.Array) -> jax.Array:
    """ATen's ``sum`` (non-transposed reference gemm): four partial sums over ``l mod 4``, the
    leftover terms into the first, then the four added in order. Sums over axis 0."""
    count = products.shape[0]
    whole = count - count % 4
    partial = jnp.zeros((4, *products.shape[1:]), F32)
    blocks = products[:whole].reshape(whole // 4, 4, *products.shape[1:])
    partial = _running_sum(partial, blocks)
    first = _running_sum(partial[0], products[whole:])
    return _running_sum(first, partial[1:])


def _avx2_dot(products: jax.Array) -> jax.Array:
    """ATen's ``bf16_dot_with_fp32_arith`` (AVX2 build; transposed-left reference gemm): blocks of
    64 into 8 registers of 8 lanes, reduced pairwise; 16-term blocks into one register; then the
    leftover terms one by one. Sums over axis 0."""
    count, rest = products.shape[0], products.shape[1:]
    main = count - count % 64
    vector = count - count % 16
    registers = jnp.zeros((8, 8, *rest), F32)
    registers = _running_sum(registers, products[:main].reshape(main // 64, 8, 8, *rest))
    while registers.shape[0] > 1:
        half = registers.shape[0] // 2
        registers = registers[:half] + registers[half:]
    tail = jnp.zeros((8, *rest), F32)
    tail = _running_sum(tail, products[main:vector].reshape(-1, 8, *rest))
    total = _lane_sum(registers[0]) + _lane_sum(tail)
    return _running_sum(total, products[vector:])


# --- torch's addmm --------------------------------------------------------------------------


def gemm_kind(m1: Operand, m2: Operand) -> str:
    """Which reference kernel torch's ``addmm_impl_cpu_`` calls for ``m1 @ m2`` into a fresh
    contiguous result: ``"notrans"``, ``"transa"``, ``"transb"`` or ``"transab"``.

    torch computes the column-major product, so a row-major result swaps the operands; each
    operand is then used as stored, transposed, or copied when neither fits.
    """
    rows, cols = m1.value.shape[0], m2.value.shape[1]
    result_strides = (max(cols, 1), 1)
    first, second = m1, m2
    if result_strides[0] == 1:  # a single column: already column-major
        swap = False
    else:
        swap, first, second = True, m2, m1
    sizes = (cols, rows) if swap else (rows, cols)
    m, n, k = sizes[0], sizes[1], first.value.shape[0 if swap else 1]
    outer, inner = (1, 0) if swap else (0, 1)

    def transposes(operand: Operand, lead: int, fallback_lead: int) -> bool:
        strides = operand.strides()
        if strides[outer] == 1 and strides[inner] >= max(1, lead):
            return False
        if strides[inner] == 1 and strides[outer] >= max(1, fallback_lead):
            return True
        return not swap  # torch copies it contiguous

    transpose_a = transposes(first, m, k)
    transpose_b = transposes(second, k, n)
    return {
        (False, False): "notrans",
        (True, False): "transa",
        (False, True): "transb",
        (True, True): "transab",
    }[transpose_a, transpose_b]


def _row_major(operand: Operand) -> jax.Array:
    """The operand's values with no transpose in their making.

    XLA's bfloat16 dot (``preferred_element_type=float32``) sums in oneDNN's order only when it
    multiplies bfloat16 operands directly; an operand produced by a transpose makes XLA convert
    both to float32 and take another kernel. A gather reorders the entries without a transpose.
    """
    if not operand.transposed:
        return operand.value
    stored = operand.value.T
    rows, cols = stored.shape
    return stored[jnp.arange(rows)[None, :], jnp.arange(cols)[:, None]]


def _rounded_scale(alpha: float, dot: jax.Array) -> jax.Array:
    return dot if alpha == 1.0 else _barrier(np.float32(alpha) * dot)


def addmm(c: Operand | None, m1: Operand, m2: Operand, *, beta: float, alpha: float) -> Operand:
    """torch's bfloat16 ``addmm(c, m1, m2, beta=beta, alpha=alpha)`` on CPU, as a contiguous
    bfloat16 result (``c`` is only read when ``beta != 0``)."""
    rows, inner = m1.value.shape
    cols = m2.value.shape[1]
    if rows * inner * cols > REFERENCE_KERNEL_MAX:
        dot = jax.lax.dot(_row_major(m1), _row_major(m2), preferred_element_type=F32)
        return Operand(_combine(c, dot, beta=beta, alpha=alpha))
    # (inner, rows, cols): every product a[i, l] * b[l, j] is exact in float32.
    products = m1.value.astype(F32).T[:, :, None] * m2.value.astype(F32)[:, None, :]
    kind = gemm_kind(m1, m2)
    if kind == "transb":
        return Operand(_accumulate(c, products, beta=beta, alpha=alpha))
    order: Callable[[jax.Array], jax.Array] = _avx2_dot if kind == "transa" else _interleaved_sum
    return Operand(_combine(c, order(products), beta=beta, alpha=alpha))


def _combine(c: Operand | None, dot: jax.Array, *, beta: float, alpha: float) -> jax.Array:
    """``beta * C + alpha * dot`` as torch's kernels round it, to bfloat16."""
    scaled = _rounded_scale(alpha, dot)
    if beta == 0.0:
        return scaled.astype(BF16)
    assert c is not None
    return fma(beta, c.value.astype(F32), scaled).astype(BF16)


def _accumulate(c: Operand | None, products: jax.Array, *, beta: float, alpha: float) -> jax.Array:
    """ATen's transposed-right reference gemm: a float32 copy of ``beta * C`` (0 for beta 0)
    that each product is added to in turn."""
    if alpha != 1.0:
        raise NotImplementedError("the transposed-right kernel is reproduced for alpha = 1 only")
    if beta == 0.0:
        start = jnp.zeros(products.shape[1:], F32)
    else:
        assert c is not None
        start = c.value.astype(F32)
        start = start if beta == 1.0 else _barrier(np.float32(beta) * start)
    return _running_sum(start, products).astype(BF16)


# --- the iteration --------------------------------------------------------------------------


def frobenius_norm(x: jax.Array) -> jax.Array:
    """torch's bfloat16 ``x.norm()``, summing ``x`` in row-major order; returns bfloat16."""
    squares = jnp.square(x.astype(F32).reshape(-1))
    vector = squares.shape[0] - squares.shape[0] % 16
    lanes = _running_sum(jnp.zeros((8,), F32), squares[:vector].reshape(-1, 8))
    total = _running_sum(lanes[0], lanes[1:])
    total = _running_sum(total, squares[vector:])
    return jnp.sqrt(total).astype(BF16)


def to_bfloat16(x: jax.Array) -> jax.Array:
    """torch's ``.bfloat16()``: float64 rounds through float32."""
    return x.astype(F32).astype(BF16) if x.dtype == jnp.float64 else x.astype(BF16)


# Jitted so that an eager update compiles the iteration once per shape and dtype instead of
# dispatching its few hundred small operations one by one; inside a jitted step it is inlined.
@functools.partial(jax.jit, static_argnames=("coefficients", "steps"))
def newton_schulz(
    update: jax.Array, *, coefficients: tuple[float, float, float], steps: int, eps: jax.Array
) -> jax.Array:
    r"""torch's ``_zeropower_via_newtonschulz``: ``steps`` quintic Newton-Schulz iterations on a
    2-D ``update``, in bfloat16 with torch's rounding; returns bfloat16.

    .. math::
        X_0 = G / \max(\|G\|_F, \epsilon), \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^\top

    on :math:`G^\top` when :math:`G` has more rows than columns.
    """
    a, b, c = coefficients
    if update.size == 0:
        return jnp.zeros(update.shape, BF16)
    matrix = to_bfloat16(update)
    # torch clamps the bfloat16 norm to eps converted to bfloat16, then divides in float32.
    norm = jnp.maximum(frobenius_norm(matrix), to_bfloat16(jnp.asarray(eps)))
    normalized = (matrix.astype(F32) / norm.astype(F32)).astype(BF16)
    tall = update.shape[0] > update.shape[1]
    # A tall matrix is worked on as a transposed view of the gradient, as torch does; from the
    # second iteration on every operand is a fresh contiguous matrix, so one traced body serves.
    x = Operand(normalized).T if tall else Operand(normalized)
    if steps > 0:
        x = _iteration(x, a, b, c)
        body = lambda _, value: _iteration(Operand(value), a, b, c).value
        x = Operand(jax.lax.fori_loop(1, steps, body, x.value))
    return x.value.T if tall else x.value


def _iteration(x: Operand, a: float, b: float, c: float) -> Operand:
    """``a X + (b A + c A^2) X`` with ``A = X X^T``, as torch's three matmuls."""
    gram = addmm(None, x, x.T, beta=0.0, alpha=1.0)
    polynomial = addmm(gram, gram, gram, beta=b, alpha=c)
    return addmm(x, polynomial, x, beta=a, alpha=1.0)
