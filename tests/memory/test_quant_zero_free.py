"""``quantize_state(..., zero_free=True)``: no positive value of a non-negative buffer is stored
as zero.

The failure it removes, reproduced on a two-step problem: an element's gradient is small
(1e-4 of its block's largest) at the first step and exactly zero at the second. Its second
moment, 1e-8 of the block's, rounds to zero at 8 bits while its first moment does not, so the
second step divides the first moment by ``eps``: thousands of learning rates, where float32
AdamW moves it by less than one. torchao's ``AdamW8bit`` does the same (checked live), and the
default reproduces it; ``zero_free`` keeps the step under float32's.
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit.combinators import _block_codes
from tests.memory.test_quant_encoder import MAPS, brute_force, samples
from tests.support.torch_oracle import require_torchao

LR = 1e-3
SMALL = (3, 17)  # the element whose gradient is 1e-4 of its block's, then zero


def gradients() -> list[np.ndarray]:
    """Two steps of gradients for a (16, 256) param: one block of 256 per row."""
    rng = np.random.default_rng(0)
    first = rng.uniform(0.5, 1.0, (16, 256)).astype(np.float32)
    first[SMALL] = 1e-4
    second = rng.uniform(0.5, 1.0, (16, 256)).astype(np.float32)
    second[SMALL] = 0.0
    return [first, second]


def run(transform: optkit.GradientTransformation) -> list[np.ndarray]:
    """The update of each step, from params of ones."""
    params = jnp.ones((16, 256), jnp.float32)
    state = transform.init(params)
    updates = []
    for grad in gradients():
        update, state = jax.jit(transform.update)(jnp.asarray(grad), state, params)
        params = params + update
        updates.append(np.asarray(update))
    return updates


@pytest.mark.parametrize(("bits", "signed"), MAPS)
def test_encoder_moves_only_positive_values_off_zero(bits, signed):
    values = samples(bits, signed)
    codes = np.asarray(
        jax.jit(_block_codes.encode, static_argnums=(1, 2, 3))(values, bits, signed, True)
    )
    table = _block_codes.quantization_map(bits, signed)
    expected = brute_force(table, values)
    # XLA flushes subnormals to zero on CPU: they are zeros here.
    positive = values >= np.finfo(np.float32).tiny
    # Only the unsigned maps' zero moves (for the signed maps the second moment's failure does
    # not arise), and only the 8-bit unsigned map has one (the 4-bit one starts at 1/16).
    lifted = positive & (table[expected] == 0) & (not signed)
    assert lifted.any() == (bits == 8 and not signed)
    np.testing.assert_array_equal(codes, np.where(lifted, 1, expected))
    specials = jnp.float32([0.0, -0.0, np.nan])
    expected = brute_force(table, np.asarray(specials))
    np.testing.assert_array_equal(_block_codes.encode(specials, bits, signed, True), expected)


@pytest.fixture(scope="module")
def updates():
    adamw = optkit.adamw(LR, weight_decay=0.0)
    return {
        "float32": run(adamw),
        "default": run(optkit.quantize_state(adamw)),
        "zero_free": run(optkit.quantize_state(adamw, zero_free=True)),
        # A chain takes the plain path (whole buffers), adamw alone the chunked one.
        "zero_free plain": run(optkit.quantize_state(optkit.chain(adamw), zero_free=True)),
    }


def test_round_to_nearest_zeroes_the_second_moment_and_the_step_explodes(updates):
    assert abs(updates["float32"][1][SMALL]) < LR
    assert abs(updates["default"][1][SMALL]) > 1000 * LR


def test_zero_free_keeps_the_step_below_float32s(updates):
    step = abs(updates["zero_free"][1][SMALL])
    assert 0 < step <= abs(updates["float32"][1][SMALL])
    np.testing.assert_array_equal(updates["zero_free"][1], updates["zero_free plain"][1])
    # Elsewhere nothing changes: no other second moment is near zero.
    others = np.ones((16, 256), bool)
    others[SMALL] = False
    for before, after in zip(updates["default"], updates["zero_free"], strict=True):
        np.testing.assert_array_equal(before[others], after[others])


def test_torchao_takes_the_same_exploding_step_as_the_default(updates):
    require_torchao()
    import torch
    from torchao.optim import AdamW8bit

    param = torch.nn.Parameter(torch.ones(16, 256))
    optimizer = AdamW8bit([param], lr=LR, weight_decay=0.0)
    steps = []
    with mock.patch.object(torch, "compile", lambda function, **_: function):
        for grad in gradients():
            before = param.detach().clone()
            param.grad = torch.from_numpy(grad)
            optimizer.step()
            steps.append((param.detach() - before).numpy())
    assert abs(steps[1][SMALL]) > 1000 * LR
    np.testing.assert_allclose(steps[1][SMALL], updates["default"][1][SMALL], rtol=1e-4)


def test_a_fresh_state_still_reads_back_zero_and_4_bits_are_unchanged():
    params = {"w": jnp.ones((16, 256))}
    adam = optkit.adam(LR)
    state = optkit.quantize_state(adam, zero_free=True).init(params)
    assert not np.asarray(state[0].nu["w"].codes).any()
    grads = {"w": jnp.asarray(gradients()[0])}
    for_4 = [optkit.quantize_state(adam, bits=4, zero_free=flag) for flag in (False, True)]
    results = [tx.update(grads, tx.init(params), params) for tx in for_4]
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_free_must_be_a_bool():
    with pytest.raises(TypeError, match="zero_free must be True or False, got 1"):
        optkit.quantize_state(optkit.adam(), zero_free=1)
