"""Block-wise quantization of one array: the quantization maps, codes and absmax scales.

A buffer is flattened and cut into blocks of ``block_size`` elements. Each block is divided by its
absolute maximum (its *scale*), and each scaled value in ``[-1, 1]`` is stored as the index of the
nearest entry of a sorted table of ``2**bits`` values (the *map*). Dequantizing looks the codes up
and multiplies by the scale. Four-bit codes are packed two to a byte, the first in the high nibble.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def dynamic_map(*, signed: bool, exponent_bits: int, total_bits: int) -> np.ndarray:
    """The dynamic (exponent + fraction) map of Dettmers et al., sorted, as float32.

    For each of ``exponent_bits`` decades ``10**(e - exponent_bits + 1)`` (``e = 0, 1, ...``) the
    interval ``[0.1, 1]`` is cut into ``n_e`` equal parts whose midpoints, times the decade, are
    map values: ``n_e = 2**(e + total_bits - 1 - exponent_bits)`` values and their negatives for a
    signed map, twice as many non-negative values for an unsigned one. Zero and one complete
    the ``2**total_bits`` entries. Values are computed in float64 and rounded once; torchao's
    tables, rounded in float32 along the way, differ from them by at most 2 float32 ulps.
    """
    values = [0.0, 1.0]
    for exponent in range(exponent_bits):
        count = 2 ** (exponent + total_bits - 1 - exponent_bits + (0 if signed else 1))
        midpoints = 0.1 + (np.arange(count) + 0.5) * 0.9 / count
        decade = 10.0 ** (exponent - exponent_bits + 1) * midpoints
        values.extend(decade)
        if signed:
            values.extend(-decade)
    table = np.sort(np.asarray(values, np.float64)).astype(np.float32)
    assert table.size == 2**total_bits, table.size
    return table


@functools.cache
def quantization_map(bits: int, signed: bool) -> np.ndarray:
    """The map a buffer uses: the dynamic maps at 8 bits (7 exponent bits) and for signed 4-bit
    buffers (3 exponent bits); at 4 bits, unsigned buffers use the linear map without zero,
    ``1/16, 2/16, ..., 1`` (Li et al., "Memory Efficient Optimizers with 4-bit States")."""
    if bits == 4 and not signed:
        return (np.arange(1, 17) / 16).astype(np.float32)
    return dynamic_map(signed=signed, exponent_bits=bits - 1, total_bits=bits)


def _nearest(table: jax.Array, values: jax.Array, bits: int) -> jax.Array:
    """The index of the map entry nearest to each value (ties to the larger): the number of
    midpoints between consecutive entries at or below it, found by a branchless binary search
    (``bits`` rounds of compare and look-up; ``jnp.searchsorted`` fails on sharded values)."""
    midpoints = (table[:-1] + table[1:]) * 0.5
    index = jnp.zeros(values.shape, jnp.int32)
    for level in reversed(range(bits)):
        candidate = index + 2**level
        index = jnp.where(values >= midpoints[candidate - 1], candidate, index)
    return index


@functools.partial(jax.jit, static_argnames=("bits", "signed", "block_size"))
def quantize(
    buffer: jax.Array, *, bits: int, signed: bool, block_size: int
) -> tuple[jax.Array, jax.Array]:
    """``(codes, scale)`` of a buffer whose size is a multiple of ``block_size``.

    ``codes`` is uint8 of shape ``(num_blocks, block_size * bits // 8)``, ``scale`` float32 of
    shape ``(num_blocks,)``: each block's absolute maximum (zero for an all-zero block, which then
    dequantizes to exactly zero). Each value divided by its scale is rounded to the nearest map
    entry, ties to the larger one.
    """
    table = jnp.asarray(quantization_map(bits, signed))
    # A buffer built under jit from constants (a fresh state) would otherwise be quantized by
    # XLA's constant folding, which takes minutes for large buffers.
    buffer = jax.lax.optimization_barrier(buffer)
    blocks = buffer.astype(jnp.float32).reshape(-1, block_size)
    scale = jnp.max(jnp.abs(blocks), axis=1)
    scaled = blocks / jnp.where(scale > 0, scale, 1.0)[:, None]
    codes = _nearest(table, scaled, bits).astype(jnp.uint8)
    if bits == 4:
        pairs = codes.reshape(codes.shape[0], -1, 2)
        codes = (pairs[..., 0] << 4) | pairs[..., 1]
    return codes, scale


@functools.partial(jax.jit, static_argnames=("bits", "signed", "shape"))
def dequantize(
    codes: jax.Array, scale: jax.Array, *, bits: int, signed: bool, shape: tuple[int, ...]
) -> jax.Array:
    """The float32 buffer of ``shape`` that ``(codes, scale)`` stand for."""
    table = jnp.asarray(quantization_map(bits, signed))
    if bits == 4:
        codes = jnp.stack([codes >> 4, codes & 0xF], axis=-1).reshape(codes.shape[0], -1)
    return (table[codes.astype(jnp.int32)] * scale[:, None]).reshape(shape)
