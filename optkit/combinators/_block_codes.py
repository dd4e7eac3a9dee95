"""Block-wise quantization of one array: the quantization maps, codes and absmax scales.

A buffer is flattened and cut into blocks of ``block_size`` elements. Each block is divided by its
absolute maximum (its *scale*), and each scaled value in ``[-1, 1]`` is stored as the index of the
nearest entry of a sorted table of ``2**bits`` values (the *map*). Dequantizing looks the codes up
and multiplies by the scale. Four-bit codes are packed two to a byte, the first in the high nibble.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

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


def midpoints(bits: int, signed: bool) -> np.ndarray:
    """The decision boundaries of round-to-nearest: the float32 midpoints of consecutive map
    entries. A value's code is the number of midpoints at or below it (ties go to the larger
    entry; NaN gets code 0)."""
    table = quantization_map(bits, signed)
    return (table[:-1] + table[1:]) * np.float32(0.5)


class EncoderTable(NamedTuple):
    """Look-up tables that find a value's code from the top bits of its float32 representation.

    A float32's bits, with the 31 below the sign flipped for negative values, are an int32
    *key* in the order of the values. The key without its ``shift`` lowest bits names a *bucket*
    of consecutive floats; ``shift`` is the largest for which no bucket holds values of
    ``[-1, 1]`` on both sides of two different midpoints. ``bucket_codes`` holds each bucket's
    least code; a value's code is that, plus one if the value is at or above
    ``next_midpoint[code]`` (the midpoint above it; NaN after the last code).
    """

    shift: int
    bucket_codes: np.ndarray  # uint8, one per bucket, in key order from the most negative
    next_midpoint: np.ndarray  # float32, one per code


def _keys(bits: np.ndarray) -> np.ndarray:
    """The order-preserving int64 keys of float32 bit patterns (given as int64)."""
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@functools.cache
def encoder_table(bits: int, signed: bool) -> EncoderTable:
    """The :class:`EncoderTable` of one map, with the widest buckets that work (checked over
    every bucket: 2 mantissa bits for the 4-bit signed map, 3 for the unsigned one, 6 and 7 for
    the 8-bit maps)."""
    boundaries = midpoints(bits, signed)
    for shift in range(23, -1, -1):
        first = np.arange(-(2 ** (31 - shift)), 2 ** (31 - shift), dtype=np.int64) << shift
        # The least and greatest value of each bucket (the keys are their own inverse).
        low, high = (
            _keys(key).astype(np.int32).view(np.float32) for key in (first, first + 2**shift - 1)
        )
        with np.errstate(invalid="ignore"):
            low, high = np.clip(low, -1, 1), np.clip(high, -1, 1)
        numbers = ~np.isnan(low)
        codes = np.searchsorted(boundaries, low[numbers], side="right")
        spread = np.searchsorted(boundaries, high[numbers], side="right") - codes
        if np.all(spread <= 1):
            break
    bucket_codes = np.zeros(first.size, np.uint8)  # NaN compares false: code 0
    bucket_codes[numbers] = codes
    # After the last code, NaN: no value compares at or above it (not even infinity).
    next_midpoint = np.append(boundaries, np.float32(np.nan)).astype(np.float32)
    return EncoderTable(shift, bucket_codes, next_midpoint)


def encode(values: jax.Array, bits: int, signed: bool, zero_free: bool = False) -> jax.Array:
    """The uint8 code of each value in ``[-1, 1]`` (or NaN): the number of :func:`midpoints` at
    or below it, found with two elementwise look-ups in :func:`encoder_table` (gathers, which
    also work on sharded values) and one comparison. With ``zero_free``, on an unsigned map
    whose first entry is zero (the 8-bit one), a positive value below the first midpoint takes
    code 1, the smallest positive entry, instead of 0: only zero itself (and NaN, and what XLA
    flushes to zero: subnormals on CPU) reads back as zero.

    XLA may compute ``values`` more than once, in different fusions, and round the copies
    differently by an ulp. The code stays that of one of the copies: the bucket may come from
    one and the comparison from another, but the comparison is with the midpoint itself, so a
    copy in the next or previous bucket still lands on its own side of it.
    """
    table = encoder_table(bits, signed)
    ints = jax.lax.bitcast_convert_type(values, jnp.int32)
    keys = ints ^ ((ints >> 31) & 0x7FFFFFFF)
    bucket = (keys >> table.shift) + 2 ** (31 - table.shift)
    code = jnp.asarray(table.bucket_codes)[bucket]
    above = values >= jnp.asarray(table.next_midpoint)[code]
    code = code + above.astype(jnp.uint8)
    if zero_free and not signed and quantization_map(bits, signed)[0] == 0:
        code = jnp.maximum(code, (values > 0).astype(jnp.uint8))
    return code


@functools.partial(jax.jit, static_argnames=("bits", "signed", "block_size", "zero_free"))
def quantize(
    buffer: jax.Array, *, bits: int, signed: bool, block_size: int, zero_free: bool = False
) -> tuple[jax.Array, jax.Array]:
    """``(codes, scale)`` of a buffer whose size is a multiple of ``block_size``.

    ``codes`` is uint8 of shape ``(num_blocks, block_size * bits // 8)``, ``scale`` float32 of
    shape ``(num_blocks,)``: each block's absolute maximum (zero for an all-zero block, which then
    dequantizes to exactly zero). Each value divided by its scale is rounded to the nearest map
    entry, ties to the larger one (see :func:`encode` for ``zero_free``).
    """
    # A buffer built under jit from constants (a fresh state) would otherwise be quantized by
    # XLA's constant folding, which takes minutes for large buffers.
    buffer = jax.lax.optimization_barrier(buffer)
    blocks = buffer.astype(jnp.float32).reshape(-1, block_size)
    num_blocks = blocks.shape[0]
    chunk = _chunk_blocks(num_blocks, block_size)
    if chunk == num_blocks:
        return quantize_blocks(blocks, bits, signed, zero_free)
    codes, scale = jax.lax.map(
        lambda part: quantize_blocks(part, bits, signed, zero_free),
        blocks.reshape(num_blocks // chunk, chunk, block_size),
    )
    return codes.reshape(num_blocks, -1), scale.reshape(num_blocks)


CHUNK_ELEMENTS = 16384
"""About how many elements :func:`quantize` encodes at a time (64 KiB of float32): each chunk's
block maxima, scaling and codes are computed while it is in cache."""


def _chunk_blocks(num_blocks: int, block_size: int) -> int:
    """The blocks per chunk: the largest divisor of ``num_blocks`` with at most
    :data:`CHUNK_ELEMENTS` elements (all the blocks when that is a single block)."""
    limit = max(1, CHUNK_ELEMENTS // block_size)
    chunk = max(d for d in range(1, min(limit, num_blocks) + 1) if num_blocks % d == 0)
    return num_blocks if chunk == 1 else chunk


def quantize_blocks(
    blocks: jax.Array, bits: int, signed: bool, zero_free: bool = False
) -> tuple[jax.Array, jax.Array]:
    """``(codes, scale)`` of a float32 array of blocks (one per row)."""
    scale = jnp.max(jnp.abs(blocks), axis=1)
    scaled = blocks / jnp.where(scale > 0, scale, 1.0)[:, None]
    codes = encode(scaled, bits, signed, zero_free)
    if bits == 4:
        pairs = codes.reshape(codes.shape[0], -1, 2)
        codes = (pairs[..., 0] << 4) | pairs[..., 1]
    return codes, scale


FLOAT32 = jnp.dtype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("bits", "signed", "shape", "dtype"))
def dequantize(
    codes: jax.Array,
    scale: jax.Array,
    *,
    bits: int,
    signed: bool,
    shape: tuple[int, ...],
    dtype: jnp.dtype = FLOAT32,
) -> jax.Array:
    """The buffer of ``shape`` that ``(codes, scale)`` stand for: computed in float32 and
    rounded once to ``dtype``."""
    table = jnp.asarray(quantization_map(bits, signed))
    if bits == 4:
        codes = jnp.stack([codes >> 4, codes & 0xF], axis=-1).reshape(codes.shape[0], -1)
    return (table[codes.astype(jnp.int32)] * scale[:, None]).reshape(shape).astype(dtype)
