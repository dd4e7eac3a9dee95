"""``quantize_state``'s storage: round-trip properties of the codes, which buffers are quantized
and with which map, the bytes the state takes, and the errors for bad arguments and states."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optkit
from optkit.combinators import _block_codes

FEW = settings(max_examples=30, deadline=None)


def spacing(table: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """The width of the map's interval holding each scaled value (twice the distance to the
    first entry below it): round-to-nearest errs by at most half of it."""
    index = np.clip(np.searchsorted(table, scaled, side="right") - 1, 0, table.size - 2)
    return np.maximum(table[index + 1] - table[index], 2 * np.maximum(table[0] - scaled, 0))


def unpacked(codes: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return codes
    return np.stack([codes >> 4, codes & 0xF], axis=-1).reshape(codes.shape[0], -1)


@st.composite
def buffers(draw: Any) -> tuple[np.ndarray, int, bool, int]:
    bits = draw(st.sampled_from([8, 4]))
    signed = draw(st.booleans())
    block_size = draw(st.sampled_from([2, 64]))
    blocks = draw(st.sampled_from([1, 3]))
    magnitude = st.floats(-30, 10).map(lambda e: float(2.0**e))
    values = draw(
        hnp.arrays(np.float64, blocks * block_size, elements=st.one_of(st.just(0.0), magnitude))
    )
    signs = draw(hnp.arrays(np.bool_, values.shape)) if signed else np.zeros(values.shape, bool)
    return np.where(signs, -values, values).astype(np.float32), bits, signed, block_size


@functools.partial(jax.jit, static_argnames=("bits", "signed", "block_size"))
def round_trip(values: jax.Array, *, bits: int, signed: bool, block_size: int) -> tuple:
    codes, scale = _block_codes.quantize(values, bits=bits, signed=signed, block_size=block_size)
    restored = _block_codes.dequantize(codes, scale, bits=bits, signed=signed, shape=values.shape)
    return codes, scale, restored


@FEW
@given(buffers())
def test_round_trip_rounds_to_the_nearest_map_entry(case):
    values, bits, signed, block_size = case
    codes, scale, restored = (
        np.asarray(x)
        for x in round_trip(jnp.asarray(values), bits=bits, signed=signed, block_size=block_size)
    )
    assert codes.dtype == np.uint8 and codes.shape == (
        values.size // block_size,
        block_size * bits // 8,
    )
    blocks = values.reshape(-1, block_size)
    np.testing.assert_array_equal(scale, np.max(np.abs(blocks), axis=1))  # exact absmax
    table = _block_codes.quantization_map(bits, signed)
    indices = unpacked(codes, bits)
    assert indices.max() < 2**bits
    restored = restored.reshape(blocks.shape)
    np.testing.assert_array_equal(restored, table[indices] * scale[:, None])
    scaled = blocks / np.where(scale > 0, scale, 1)[:, None]
    bound = 0.5 * spacing(table, scaled) * scale[:, None]
    # Up to the float32 rounding of the product and of the difference: 2 ulps of the scale.
    slack = 2 * np.spacing(scale)[:, None]
    assert np.all(np.abs(restored - blocks) <= bound + slack)
    nearest = np.min(np.abs(table[None, None, :] - scaled[..., None]), axis=-1)
    chosen = np.abs(table[indices] - scaled)
    assert np.all(chosen <= nearest + 1e-7)  # no other entry is nearer (ties aside)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_fresh_state_dequantizes_to_zero(bits):
    params = {"w": jnp.ones((64, 256), jnp.float32)}
    tx = optkit.quantize_state(optkit.adamw(amsgrad=True), bits=bits)
    adam_state = tx.init(params)[0]
    for field in ("mu", "nu", "nu_max"):
        buffer = getattr(adam_state, field)["w"]
        assert isinstance(buffer, optkit.QuantizedBuffer)
        np.testing.assert_array_equal(buffer.scale, 0.0)
        signed = field == "mu"
        restored = _block_codes.dequantize(
            buffer.codes, buffer.scale, bits=bits, signed=signed, shape=(64, 256)
        )
        np.testing.assert_array_equal(restored, 0.0)


def state_bytes(state: Any) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


@pytest.mark.parametrize(("bits", "limit"), [(8, 2.1), (4, 1.1)])
def test_adam_state_bytes_per_param(bits, limit):
    params = {"a": jnp.zeros((512, 1024), jnp.float32), "b": jnp.zeros((1024, 256), jnp.float32)}
    count = sum(p.size for p in jax.tree.leaves(params))
    quantized = optkit.quantize_state(optkit.adamw(), bits=bits).init(params)
    assert state_bytes(quantized) / count <= limit
    assert state_bytes(optkit.adamw().init(params)) / count >= 8  # float32 Adam, for scale


class _Moments(NamedTuple):
    signed_buffer: Any
    square: Any
    non_negative_fields = ("square",)


class _Undeclared(NamedTuple):
    square: Any


def holding(state: Any) -> optkit.GradientTransformation:
    return optkit.GradientTransformation(lambda params: state, lambda u, s, p=None: (u, s))


@pytest.mark.parametrize("bits", [8, 4])
def test_declared_non_negative_fields_use_the_unsigned_map(bits):
    values = jnp.asarray(np.random.default_rng(0).uniform(0, 1, 4096), jnp.float32)
    for state, field, signed in [
        (_Moments(values, values), "square", False),
        (_Moments(values, values), "signed_buffer", True),
        (_Undeclared(values), "square", True),
    ]:
        buffer = getattr(optkit.quantize_state(holding(state), bits=bits).init(values), field)
        expected = _block_codes.quantize(
            values, bits=bits, signed=signed, block_size=256 if bits == 8 else 128
        )
        np.testing.assert_array_equal(buffer.codes, expected[0])


def test_adam_declares_its_second_moments():
    assert optkit.ScaleByAdamState.non_negative_fields == ("nu", "nu_max")


def test_integer_small_uneven_and_scalar_buffers_are_left_alone():
    state = {
        "counts": jnp.zeros(8192, jnp.int32),
        "complex": jnp.zeros(8192, jnp.complex64),
        "small": jnp.zeros(1024, jnp.float32),
        "uneven": jnp.zeros(8200, jnp.float32),
        "scalar": jnp.float32(0.5),
        "big": jnp.zeros(8192, jnp.float32),
    }
    stored = optkit.quantize_state(holding(state)).init(None)
    for name in ("counts", "complex", "small", "uneven", "scalar"):
        assert stored[name] is state[name]
    assert isinstance(stored["big"], optkit.QuantizedBuffer)
    assert isinstance(optkit.quantize_state(holding(state), min_size=0).init(None)["small"], tuple)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"bits": 6}, ValueError, "bits must be 8 or 4"),
        ({"bits": 16}, ValueError, "bits must be an integer in [4, 8]"),
        ({"bits": 8.0}, ValueError, "bits must be an integer"),
        ({"block_size": 0}, ValueError, "block_size must be an integer in [1, inf]"),
        ({"block_size": 64.0}, ValueError, "block_size must be an integer"),
        ({"bits": 4, "block_size": 33}, ValueError, "block_size must be even at bits=4"),
        ({"min_size": -1}, ValueError, "min_size must be an integer in [0, inf]"),
        ({"min_size": True}, ValueError, "min_size must be an integer"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        optkit.quantize_state(optkit.adam(), **kwargs)


def test_a_factory_is_refused():
    with pytest.raises(TypeError, match="without calling it"):
        optkit.quantize_state(optkit.adam)


def test_a_state_of_another_layout_is_refused():
    params = {"w": jnp.ones((64, 256), jnp.float32)}
    tx = optkit.quantize_state(optkit.adam())
    with pytest.raises(ValueError, match=r"leaf '0/mu/w' should be a QuantizedBuffer"):
        tx.update(params, optkit.adam().init(params), params)
    with pytest.raises(ValueError, match=r"should be an unquantized buffer"):
        optkit.quantize_state(optkit.adam(), min_size=10**6).update(params, tx.init(params), params)
