"""dtype behaviour under ``jax_enable_x64``: float64 stays float64, float32 and bfloat16 stay put.

The test session runs with x64 on (tests/conftest.py), the setting in which a stray Python-double
hyperparameter or a float64 schedule could silently promote float32 or bfloat16 state.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import BY_NAME, REGISTRY


def _typical(info: OptimizerInfo, learning_rate):
    return info.make(learning_rate=learning_rate)


# Every registry row in its typical set-up (every state buffer on), and set-ups that exercise
# other code paths: Nesterov, a mask, clipping in a chain.
EXTRA = {
    "sgd_nesterov": lambda lr: optkit.sgd(lr, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adamw_masked": lambda lr: optkit.adamw(lr, weight_decay=1e-2, mask={"w": True, "b": False}),
    "rmsprop_uncentered": lambda lr: optkit.rmsprop(lr, momentum=0.5, weight_decay=1e-4),
    "clipped_adam": lambda lr: optkit.chain(
        optkit.clip(1.0), optkit.clip_by_global_norm(5.0), optkit.adam(lr)
    ),
}
OPTIMIZERS = {
    **{info.name: functools.partial(_typical, info) for info in REGISTRY},
    **EXTRA,
}
BF16_LEARNING_RATES = {
    **{info.name: info.bfloat16_learning_rate for info in REGISTRY},
    "sgd_nesterov": 0.05,
    "adamw_masked": 0.1,
    "rmsprop_uncentered": 0.02,
    "clipped_adam": 0.1,
}

LEARNING_RATES = {
    "python_float": lambda lr: lr,
    "float64_scalar": lambda lr: jnp.asarray(lr, jnp.float64),
    "float64_schedule": lambda lr: lambda count: jnp.asarray(lr, jnp.float64) * 0.99**count,
}

_rng = np.random.default_rng(0)
_X = _rng.normal(size=(16, 4))
_W_TRUE = _rng.normal(size=(4, 3))
_B_TRUE = _rng.normal(size=(3,))
_Y = _X @ _W_TRUE + _B_TRUE


def make_params(dtype, b_dtype=None):
    return {
        "w": jnp.asarray(_rng.normal(size=(4, 3)) * 0.1, dtype),
        "b": jnp.zeros(3, dtype if b_dtype is None else b_dtype),
    }


def loss(params):
    # Computed in float32 or wider whatever the params' dtype; gradients come back in each
    # param's own dtype.
    wide = jnp.promote_types(jnp.result_type(params["w"]), jnp.float32)
    x, y = jnp.asarray(_X, wide), jnp.asarray(_Y, wide)
    prediction = x @ params["w"].astype(wide) + params["b"].astype(wide)
    return jnp.mean((prediction - y) ** 2)


# The extra update arguments each set-up needs (LBFGS evaluates the loss itself).
UPDATE_ARGS = {
    **{info.name: info.update_args(loss) for info in REGISTRY},
    **{name: {} for name in EXTRA},
}

# Scalar state fields whose dtype does not follow the params': integer counters (int32 update
# counts, LBFGS's ``n_iter``...), and each row's ``scalar_state_dtypes`` (NAdam's float32
# ``mu_product``, ASGD's ``eta`` and ``mu``, as torch keeps them).
FIXED_SCALARS = {info.name: dict(info.scalar_state_dtypes) for info in REGISTRY}


def fixed_dtype(name, path, leaf):
    """The dtype a state leaf of optimizer ``name`` has whatever the params' dtype, or None."""
    if np.ndim(leaf) != 0:
        return None
    if jnp.issubdtype(leaf.dtype, jnp.integer):
        return "int32"
    return FIXED_SCALARS.get(name, {}).get(getattr(path[-1], "name", None))


def is_fixed_scalar(name, aval) -> bool:
    """Whether an output of ``update`` may be one of the fixed-dtype scalars."""
    fixed = {"int32", *FIXED_SCALARS.get(name, {}).values()}
    return aval.ndim == 0 and aval.dtype in {jnp.dtype(d) for d in fixed}


def float_state_leaves(name, state):
    """The state's leaves except the fixed-dtype scalars (checked here), as (path, leaf)."""
    floats = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        fixed = fixed_dtype(name, path, leaf)
        if fixed is not None:
            assert leaf.dtype == fixed, jax.tree_util.keystr(path)
        else:
            floats.append((jax.tree_util.keystr(path), leaf))
    return floats


def two_steps(tx, params, name):
    """Init and two updates; returns the last updates, the state and the jaxpr of ``update``."""
    state = tx.init(params)
    grads = jax.grad(loss)(params)
    update = functools.partial(tx.update, **UPDATE_ARGS[name])
    updates, state = update(grads, state, params)
    jaxpr = jax.make_jaxpr(update)(grads, state, params)
    updates, state = update(grads, state, params)
    return updates, state, jaxpr


# --- float64 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lr_kind", list(LEARNING_RATES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float64_end_to_end(name, lr_kind):
    tx = OPTIMIZERS[name](LEARNING_RATES[lr_kind](1e-2))
    updates, state, jaxpr = two_steps(tx, make_params(jnp.float64), name)

    for path, leaf in float_state_leaves(name, state):
        assert leaf.dtype == jnp.float64, path
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == jnp.float64
    for aval in jaxpr.out_avals:
        assert aval.dtype == jnp.float64 or is_fixed_scalar(name, aval), aval


def float32_equations(jaxpr, allowed: tuple[str, ...], *, scalars_ok: bool = False) -> list[str]:
    """The equations of ``jaxpr`` (nested ones too) that read or make float32 values (arrays
    only, with ``scalars_ok``), except inside the nested calls named in ``allowed``."""

    def is_float32(v) -> bool:
        aval = v.aval
        return getattr(aval, "dtype", None) == jnp.float32 and not (scalars_ok and aval.ndim == 0)

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"] in allowed:
            continue
        if any(is_float32(v) for v in (*eqn.invars, *eqn.outvars)):
            found.append(str(eqn))
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    found += float32_equations(sub, allowed, scalars_ok=scalars_ok)
    return found


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float64_update_computes_nothing_in_float32(name):
    tx = OPTIMIZERS[name](LEARNING_RATES["float64_schedule"](1e-2))
    _, _, jaxpr = two_steps(tx, make_params(jnp.float64), name)
    info = BY_NAME.get(name)
    allowed = info.matrix_functions if info is not None else ()
    # No float32 value, except inside whole-matrix functions (Muon's bfloat16 Newton-Schulz) and
    # the fixed-dtype float32 state scalars (NAdam's mu_product, ASGD's eta and mu), by design.
    scalars_ok = "float32" in FIXED_SCALARS.get(name, {}).values()
    assert not float32_equations(jaxpr.jaxpr, allowed, scalars_ok=scalars_ok)
    if not allowed and not scalars_ok:
        assert "f32" not in str(jaxpr)


# --- float32 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lr_kind", list(LEARNING_RATES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float32_params_stay_float32(name, lr_kind):
    tx = OPTIMIZERS[name](LEARNING_RATES[lr_kind](1e-2))
    params = make_params(jnp.float32)
    updates, state, jaxpr = two_steps(tx, params, name)

    for path, leaf in float_state_leaves(name, state):
        assert leaf.dtype == jnp.float32, path
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == jnp.float32
    for aval in jaxpr.out_avals:
        assert aval.dtype == jnp.float32 or is_fixed_scalar(name, aval), aval
    assert optkit.apply_updates(params, updates)["w"].dtype == jnp.float32


# --- bfloat16 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_bfloat16_training(name):
    tx = OPTIMIZERS[name](BF16_LEARNING_RATES[name])
    params = make_params(jnp.bfloat16)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, **UPDATE_ARGS[name])
        return optkit.apply_updates(params, updates), state, value, updates

    initial_loss = float(loss(params))
    for _ in range(20):
        params, state, _, updates = step(params, state)
    final_loss = float(loss(params))

    for leaf in jax.tree.leaves(params) + jax.tree.leaves(updates):
        assert leaf.dtype == jnp.bfloat16
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    for path, leaf in float_state_leaves(name, state):
        assert leaf.dtype == jnp.bfloat16, path
        assert np.all(np.isfinite(np.asarray(leaf, np.float32))), path
    assert np.isfinite(final_loss)
    assert final_loss < 0.3 * initial_loss


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mixed_tree_keeps_each_leaf_dtype(name):
    tx = OPTIMIZERS[name](LEARNING_RATES["float64_schedule"](1e-2))
    params = make_params(jnp.bfloat16, b_dtype=jnp.float32)
    updates, state, jaxpr = two_steps(tx, params, name)
    expected = {"w": jnp.bfloat16, "b": jnp.float32}

    for key, leaf in updates.items():
        assert leaf.dtype == expected[key], key
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        fixed = fixed_dtype(name, path, leaf)
        key = getattr(path[-1], "key", None)
        if fixed is not None:
            assert leaf.dtype == fixed, jax.tree_util.keystr(path)
        elif key in expected:  # a buffer: its param's dtype
            assert leaf.dtype == expected[key], jax.tree_util.keystr(path)
        else:
            # A scalar of the whole update (LBFGS's step size): the params' promoted dtype.
            assert leaf.dtype == jnp.float32, jax.tree_util.keystr(path)
    new_params = optkit.apply_updates(params, updates)
    for key, leaf in new_params.items():
        assert leaf.dtype == expected[key], key
    assert {aval.dtype for aval in jaxpr.out_avals} <= {
        jnp.dtype(jnp.bfloat16),
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
    }


# --- apply_updates -----------------------------------------------------------------------------


def test_apply_updates_float32_updates_on_bfloat16_params_returns_bfloat16():
    params = {"a": jnp.array([1.0, 2.0, -4.0], jnp.bfloat16)}
    # bfloat16 has 8 significant bits: 1 + 2**-7 is representable, 2 + 3 * 2**-9 rounds to 2,
    # -4 + 2**-5 = -3.96875 is representable.
    updates = {"a": jnp.array([2.0**-7, 3 * 2.0**-9, 2.0**-5], jnp.float32)}
    out = optkit.apply_updates(params, updates)

    assert out["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), [1.0078125, 2.0, -3.96875])


def test_apply_updates_float64_updates_on_float32_params_returns_float32():
    params = jnp.array([1.0, 2.0], jnp.float32)
    out = optkit.apply_updates(params, jnp.array([0.5, -0.25], jnp.float64))

    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np.array([1.5, 1.75], np.float32))
