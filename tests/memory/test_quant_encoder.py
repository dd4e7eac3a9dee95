"""The look-up encoder of ``quantize_state`` against a brute-force nearest search, for all four
maps: every midpoint and its float32 neighbours, every bucket's first and last value, random
values over every decade, and the special values."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from optkit.combinators import _block_codes

MAPS = [(8, True), (8, False), (4, True), (4, False)]


def brute_force(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Round to nearest, ties to the larger entry, as the rule is stated: the number of float32
    midpoints of consecutive entries at or below each value, found by comparing each value with
    every midpoint (NaN: code 0)."""
    boundaries = (table[:-1] + table[1:]) * np.float32(0.5)
    with np.errstate(invalid="ignore"):
        return np.concatenate(
            [
                (chunk[:, None] >= boundaries[None, :]).sum(axis=1)
                for chunk in np.array_split(values, max(1, values.size // 8192))
            ]
        )


def neighbours(values: np.ndarray, ulps: int = 2) -> np.ndarray:
    """The values and the floats up to ``ulps`` above and below each."""
    ints = values.astype(np.float32).view(np.int32).astype(np.int64)
    shifted = [ints + k for k in range(-ulps, ulps + 1)]
    out = np.concatenate(shifted)
    return (
        out[(out >= np.iinfo(np.int32).min) & (out <= np.iinfo(np.int32).max)]
        .astype(np.int32)
        .view(np.float32)
    )


def bucket_edges(table: _block_codes.EncoderTable) -> np.ndarray:
    """The first and last value of every bucket that holds values of ``[-1, 1]``."""
    buckets = table.bucket_codes.size
    first = (np.arange(buckets, dtype=np.int64) - buckets // 2) << table.shift
    keys = np.concatenate([first, first + 2**table.shift - 1, first - 1])
    keys = keys[(keys >= np.iinfo(np.int32).min) & (keys <= np.iinfo(np.int32).max)]
    keys = np.where(keys < 0, keys ^ 0x7FFFFFFF, keys).astype(np.int32)
    values = keys.view(np.float32)
    with np.errstate(invalid="ignore"):
        return values[np.abs(values) <= 1]


def samples(bits: int, signed: bool) -> np.ndarray:
    rng = np.random.default_rng(bits * 2 + signed)
    table = _block_codes.quantization_map(bits, signed)
    magnitudes = np.concatenate(
        [rng.uniform(0, 1, 200_000), 10.0 ** rng.uniform(-12, 0, 200_000)]
    ).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], magnitudes.size) if signed else 1.0
    specials = np.float32([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.5, -1.5])
    return np.concatenate(
        [
            (signs * magnitudes).astype(np.float32),
            neighbours(table),
            neighbours((table[:-1] + table[1:]) * np.float32(0.5)),
            bucket_edges(_block_codes.encoder_table(bits, signed)),
            specials,
        ]
    )


encode = jax.jit(_block_codes.encode, static_argnames=("bits", "signed"))


@pytest.mark.parametrize(("bits", "signed"), MAPS)
def test_encoder_matches_brute_force(bits, signed):
    table = _block_codes.quantization_map(bits, signed)
    values = samples(bits, signed)
    codes = np.asarray(encode(values, bits=bits, signed=signed))
    expected = brute_force(table, values)
    wrong = np.nonzero(codes != expected)[0]
    assert wrong.size == 0, (values[wrong[:5]], codes[wrong[:5]], expected[wrong[:5]])
    assert codes.dtype == np.uint8


@pytest.mark.parametrize(("bits", "signed"), MAPS)
def test_encoder_special_values(bits, signed):
    top = 2**bits - 1
    values = np.float32([np.nan, 1.0, 1.0000001, 3.0, np.inf])
    codes = np.asarray(encode(values, bits=bits, signed=signed))
    assert codes.tolist() == [0, top, top, top, top]


@pytest.mark.parametrize(("bits", "signed"), MAPS)
def test_mixed_copies_give_one_of_their_codes(bits, signed):
    """XLA may compute a value twice, an ulp apart, in the look-up and in the comparison: the
    code is then that of one of the two copies, for every pair of adjacent floats that straddle
    a bucket edge (checked on the tables, for every bucket)."""
    table = _block_codes.encoder_table(bits, signed)
    edges = bucket_edges(table)
    ints = edges.view(np.int32).astype(np.int64)
    above = np.where(ints < 0, ints - 1, ints + 1)  # the next float up (negative: toward 0)
    valid = (above >= np.iinfo(np.int32).min) & (above <= np.iinfo(np.int32).max)
    lower = edges[valid]
    upper = above[valid].astype(np.int32).view(np.float32)
    maps = _block_codes.quantization_map(bits, signed)
    for looked_up, compared in ((lower, upper), (upper, lower)):
        keys = looked_up.view(np.int32).astype(np.int64)
        keys = np.where(keys < 0, keys ^ 0x7FFFFFFF, keys)
        code = table.bucket_codes[(keys >> table.shift) + 2 ** (31 - table.shift)].astype(int)
        mixed = code + (compared >= table.next_midpoint[code])
        own = brute_force(maps, looked_up), brute_force(maps, compared)
        assert np.all((mixed == own[0]) | (mixed == own[1]))
