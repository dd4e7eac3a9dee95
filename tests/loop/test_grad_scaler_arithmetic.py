"""grad_scaler's arithmetic is torch's, bit for bit: the reciprocal of the scale, the unscaling,
and the new scale of ``_amp_update_scale_`` (with and without float64).

Expected values come from torch (live, or its golden table in tests/loop/golden/) or from numpy's
float64 arithmetic rounded to float32, which is how torch defines them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import _numerics
from tests.loop import grad_scaler_oracle as oracle
from tests.loop.generate_grad_scaler_golden import Golden, load_golden


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@functools.cache
def next_scales(x64: bool) -> np.ndarray:
    """grad_scaler's new (scale, tracker) for each row of ``UPDATE_SCALE_INPUTS``, through a
    skipped or a taken step (all rows in one compiled program)."""

    def one_row(scale, tracker, found_inf, growth, backoff, interval):
        tx = optkit.grad_scaler(
            optkit.identity(),
            growth_factor=growth,
            backoff_factor=backoff,
            growth_interval=interval,
        )
        state = tx.init(jnp.zeros(1))._replace(
            scale=jnp.float32(scale), growth_tracker=jnp.int32(tracker)
        )
        _, state = tx.update(jnp.array([jnp.inf if found_inf else 1.0], jnp.float32), state)
        return state.scale, state.growth_tracker

    with jax.enable_x64(x64):
        rows = jax.jit(lambda: [one_row(*row) for row in oracle.UPDATE_SCALE_INPUTS])()
    return np.asarray([(float(scale), int(tracker)) for scale, tracker in rows])


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
def test_update_scale_matches_torch_golden(golden, x64):
    np.testing.assert_array_equal(next_scales(x64), golden.update_scale)


@pytest.mark.torch
def test_update_scale_matches_live_torch():
    np.testing.assert_array_equal(next_scales(True), oracle.torch_update_scale())


@pytest.mark.parametrize("factor", [0.3, 0.9, 1.1, 0.999, 1.0001, 1.9, 3.7, 1e-3, 1 + 2**-30])
def test_float32_emulation_of_the_double_product_is_exact(factor):
    """Without float64, ``float32(double(s) * factor)`` is emulated with 32-bit integers; over
    many scales it equals numpy's double product rounded to float32 (torch's arithmetic), bit
    for bit, wherever the result is a normal float32."""
    rng = np.random.default_rng(0)
    scales = (rng.uniform(1, 2, 20000) * 2.0 ** rng.integers(-100, 100, 20000)).astype(np.float32)
    scales = np.concatenate([scales, np.float32([1.0, 65536.0, np.finfo(np.float32).max])])
    with np.errstate(over="ignore"):
        expected = (scales.astype(np.float64) * factor).astype(np.float32)
    got = np.asarray(jax.jit(_numerics.float32_times_double, static_argnums=1)(scales, factor))
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
def test_unscaling_multiplies_by_torchs_float32_reciprocal(x64):
    """torch's ``scale.double().reciprocal().float()``, for many scales; float64 gradients are
    multiplied by it in float64."""
    rng = np.random.default_rng(1)
    scales = (rng.uniform(1, 2, 2000) * 2.0 ** rng.integers(-60, 60, 2000)).astype(np.float32)
    inverse = (1.0 / scales.astype(np.float64)).astype(np.float32)
    grads = np.float64(1.0 + 2**-40)
    with jax.enable_x64(x64):
        tx = optkit.grad_scaler(optkit.identity())
        state = tx.init(jnp.zeros(1))
        unscale = jax.jit(jax.vmap(lambda s, g: tx.update(g, state._replace(scale=s))[0]))
        got = np.asarray(unscale(scales, jnp.full((scales.size, 1), 1.0, jnp.float32)))
        np.testing.assert_array_equal(got[:, 0], inverse)
        if x64:
            got = np.asarray(unscale(scales, jnp.full((scales.size, 1), grads)))
            np.testing.assert_array_equal(got[:, 0], grads * inverse.astype(np.float64))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_unscaling_matches_torchs_kernel(dtype):
    torch = oracle.require_torch()
    grads = np.random.default_rng(2).normal(size=64) * 1000.0
    scale = 1234.5677
    t_grads = torch.tensor(grads, dtype=getattr(torch, dtype))
    found_inf = torch.zeros(())
    inverse = torch.tensor(scale, dtype=torch.float32).double().reciprocal().float()
    torch._amp_foreach_non_finite_check_and_unscale_([t_grads], found_inf, inverse)
    tx = optkit.grad_scaler(optkit.identity(), init_scale=scale)
    ours, _ = tx.update(jnp.asarray(grads, dtype), tx.init(jnp.zeros(64)))
    np.testing.assert_array_equal(np.asarray(ours, np.float64), t_grads.double().numpy())


def test_a_gradient_that_overflows_only_when_unscaled_is_skipped():
    """The one documented difference: torch checks the scaled gradient (3e38 is finite) and
    would step with inf; here the unscaled one is checked."""
    tx = optkit.grad_scaler(optkit.sgd(0.1), init_scale=0.25)
    params = jnp.ones(2, jnp.float32)
    updates, state = tx.update(jnp.array([3e38, 1.0], jnp.float32), tx.init(params), params)
    assert int(state.skipped_steps) == 1
    assert float(state.scale) == 0.125
    np.testing.assert_array_equal(updates, [0.0, 0.0])


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
def test_settings_injected_as_arrays(x64):
    """``inject_hyperparams(optkit.grad_scaler)`` keeps the factors in the state, settable at run
    time and range-checked; the new scale is then rounded from the default float dtype."""
    with jax.enable_x64(x64):
        tx = optkit.inject_hyperparams(optkit.grad_scaler)(
            inner=optkit.sgd(0.1),
            init_scale=4.0,
            growth_factor=1.1,
            backoff_factor=0.3,
            growth_interval=1,
        )
        params = jnp.ones(2, jnp.float32)
        state = tx.init(params)
        state = optkit.set_hyperparams(state, growth_factor=1.7)
        _, state = jax.jit(tx.update)(jnp.ones(2, jnp.float32), state, params)
        growth = np.float64(1.7) if x64 else np.float64(np.float32(1.7))
        assert float(optkit.loss_scale(state)) == np.float32(np.float32(4.0) * growth)
        with pytest.raises(ValueError, match=r"backoff_factor must be in \(0.0, 1.0\)"):
            optkit.set_hyperparams(state, backoff_factor=1.5)
