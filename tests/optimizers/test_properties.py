"""Property tests: invariants every optimizer keeps for any valid hyperparameters.

Hyperparameters are drawn by hypothesis. Most runs are eager with Python floats, the usual way to
build an optimizer. The compiled runs take the hyperparameters as traced arrays, so each optimizer
and flag combination compiles once and every example reuses the program; their eager reference is
built from the same arrays, and a separate property checks that arrays and Python floats agree.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optkit
from tests.support.optimizer_info import EPS, WEIGHT_DECAY, unit, zero_or
from tests.support.registry import BY_NAME, NAMES

STEPS = 5
FEW = settings(max_examples=30, deadline=None)

_rng = np.random.default_rng(0)
_X = jnp.asarray(_rng.normal(size=(6, 3)))
_Y = jnp.asarray(_rng.normal(size=(6, 2)))
PARAMS = {"w": jnp.asarray(_rng.normal(size=(3, 2))), "b": jnp.asarray(_rng.normal(size=(2,)))}


def loss(params):
    residual = _X @ params["w"] + params["b"] - _Y
    return 0.5 * jnp.sum(residual**2) + 0.1 * jnp.sum(jnp.sin(3.0 * params["w"]))


grad_fn = jax.jit(jax.grad(loss))
negated_grad_fn = jax.jit(jax.grad(lambda params: -loss(params)))
# The extra update arguments each optimizer needs (LBFGS evaluates the loss itself), and all of
# them together for chains of any optimizers.
UPDATE_ARGS = {name: BY_NAME[name].update_args(loss) for name in NAMES}
ANY_UPDATE_ARGS = {key: value for extra in UPDATE_ARGS.values() for key, value in extra.items()}
MAXIMIZING = [name for name in NAMES if "maximize" in BY_NAME[name].flags()]

_LR = unit(1e-3, 0.3)
# lr * factor**count; factor 1 means a constant learning rate.
_LR_FACTOR = st.one_of(st.just(1.0), unit(0.5, 1.0))


@st.composite
def hyperparameters(draw, name: str):
    """``(numeric hyperparameters, bool flags)`` for optimizer ``name``, learning rate included.

    ``lr_factor`` turns the learning rate into the schedule ``lr * lr_factor**count``.
    """
    hp, flags = draw(BY_NAME[name].hyperparameters())
    hp["learning_rate"] = draw(_LR)
    hp["lr_factor"] = draw(_LR_FACTOR)
    return hp, flags


def make_optimizer(name: str, hp: dict[str, Any], flags: dict[str, bool]):
    """Build optimizer ``name``. With Python floats a ``lr_factor`` of 1 gives a constant learning
    rate; with arrays (traced or not) the schedule is always used, so the state structure does
    not depend on the values."""
    hp = dict(hp)
    lr, factor = hp.pop("learning_rate"), hp.pop("lr_factor")
    if isinstance(factor, float) and factor == 1.0:
        learning_rate = lr
    else:

        def learning_rate(count):
            return lr * factor**count

    return build(name, learning_rate=learning_rate, **hp, **flags)


def build(name: str, **kwargs: Any):
    """Optimizer ``name`` from these arguments, built for ``PARAMS`` as the registry says (Muon
    takes the matrix ``w``, AdamW the vector ``b``)."""
    info = BY_NAME[name]
    return info.build(info.factory, kwargs)


def as_arrays(hp: dict[str, Any]) -> dict[str, Any]:
    """Every number as a float64 array; tuples (Rprop's etas) stay tuples, of arrays."""
    return jax.tree.map(lambda value: jnp.asarray(value, jnp.float64), hp)


# --- runners -----------------------------------------------------------------------------------


def run_eager(tx, name, grad=grad_fn, steps=STEPS):
    """The params after each step, and every state from init on, of an eager Python loop of
    optimizer ``name``."""
    params = PARAMS
    state = tx.init(params)
    trajectory, states = [], [state]
    for _ in range(steps):
        updates, state = tx.update(grad(params), state, params, **UPDATE_ARGS[name])
        params = optkit.apply_updates(params, updates)
        trajectory.append(params)
        states.append(state)
    return trajectory, states


def run_updates(tx, grads):
    """The updates a transform gives for a fixed gradient sequence at the fixed ``PARAMS``."""
    state = tx.init(PARAMS)
    outs = []
    for g in grads:
        out, state = tx.update(g, state, PARAMS, **ANY_UPDATE_ARGS)
        outs.append(out)
    return outs


@functools.cache
def jitted_step(name: str, flag_items: tuple[tuple[str, bool], ...]):
    """One compiled step per optimizer and flags; the hyperparameters are traced arguments."""
    flags = dict(flag_items)

    @jax.jit
    def step(hp, params, state):
        tx = make_optimizer(name, hp, flags)
        updates, state = tx.update(grad_fn(params), state, params, **UPDATE_ARGS[name])
        return optkit.apply_updates(params, updates), state

    return step


@functools.cache
def jitted_scan(name: str, flag_items: tuple[tuple[str, bool], ...]):
    """``STEPS`` steps in ``lax.scan``, returning the params after each; compiled once per flags."""
    flags = dict(flag_items)

    @jax.jit
    def run(hp, params):
        tx = make_optimizer(name, hp, flags)

        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grad_fn(params), state, params, **UPDATE_ARGS[name])
            params = optkit.apply_updates(params, updates)
            return (params, state), params

        _, trajectory = jax.lax.scan(body, (params, tx.init(params)), None, length=STEPS)
        return trajectory

    return run


def assert_trees_close(actual, expected, rtol, atol=0.0):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def avals(tree):
    """Structure plus each leaf's shape and dtype: what jit and scan need to stay fixed."""
    return jax.tree.structure(tree), [
        (np.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)
    ]


# --- properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(data=st.data())
def test_zero_learning_rate_leaves_params_unchanged(name, data):
    hp, flags = data.draw(hyperparameters(name))
    zero = data.draw(
        st.sampled_from(
            [0.0, jnp.asarray(0.0), lambda count: jnp.zeros([]), lambda count: 0.0 * 0.9**count]
        )
    )
    del hp["learning_rate"], hp["lr_factor"]
    hp.update(BY_NAME[name].zero_learning_rate_overrides)
    # adamw's decoupled decay is scaled by the learning rate, so it vanishes too.
    trajectory, _ = run_eager(build(name, learning_rate=zero, **hp, **flags), name)

    for params in trajectory:
        assert_trees_equal(params, PARAMS)


@pytest.mark.parametrize("name", MAXIMIZING)
@FEW
@given(data=st.data())
def test_maximize_f_equals_minimize_negative_f(name, data):
    hp, flags = data.draw(hyperparameters(name))
    ascent, _ = run_eager(make_optimizer(name, hp, {**flags, "maximize": True}), name, grad_fn)
    descent, _ = run_eager(
        make_optimizer(name, hp, {**flags, "maximize": False}), name, negated_grad_fn
    )

    for a, d in zip(ascent, descent, strict=True):
        assert_trees_close(a, d, rtol=1e-12)


@st.composite
def transforms(draw):
    """Any optimizer or primitive with drawn hyperparameters."""
    kind = draw(
        st.sampled_from(
            [
                *NAMES,
                "trace",
                "scale_by_adam",
                "scale_by_rms",
                "scale_by_rss",
                "clip",
                "clip_by_global_norm",
                "add_l2_decay",
                "add_decayed_weights",
                "scale",
                "negate",
                "scheduled_learning_rate",
            ]
        )
    )
    if kind in BY_NAME:
        return make_optimizer(kind, *draw(hyperparameters(kind)))
    if kind == "trace":
        return optkit.trace(draw(unit(0.0, 0.95)), dampening=draw(zero_or(0.01, 1.0)))
    if kind == "scale_by_adam":
        return optkit.scale_by_adam(
            b1=draw(unit(0.0, 0.99)),
            b2=draw(unit(0.0, 0.999)),
            eps=draw(EPS),
            eps_root=draw(zero_or(1e-8, 1e-2)),
            amsgrad=draw(st.booleans()),
        )
    if kind == "scale_by_rms":
        return optkit.scale_by_rms(
            alpha=draw(unit(0.1, 0.999)), eps=draw(EPS), centered=draw(st.booleans())
        )
    if kind == "scale_by_rss":
        return optkit.scale_by_rss(draw(unit(0.0, 1.0)), eps=draw(EPS))
    if kind == "clip":
        return optkit.clip(draw(unit(0.0, 2.0)))
    if kind == "clip_by_global_norm":
        return optkit.clip_by_global_norm(draw(unit(0.0, 5.0)))
    if kind == "add_l2_decay":
        return optkit.add_l2_decay(draw(WEIGHT_DECAY))
    if kind == "add_decayed_weights":
        return optkit.add_decayed_weights(draw(WEIGHT_DECAY), mask={"w": True, "b": False})
    if kind == "scale":
        return optkit.scale(draw(unit(-2.0, 2.0)))
    if kind == "negate":
        return optkit.negate()
    lr, factor = draw(_LR), draw(unit(0.5, 1.0))
    return optkit.scale_by_learning_rate(lambda count: lr * factor**count)


_GRADS = [jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)) * (k + 1), PARAMS) for k in range(4)]


@FEW
@given(a=transforms(), b=transforms(), c=transforms())
def test_chain_is_associative(a, b, c):
    flat = run_updates(optkit.chain(a, b, c), _GRADS)
    right = run_updates(optkit.chain(a, optkit.chain(b, c)), _GRADS)
    left = run_updates(optkit.chain(optkit.chain(a, b), c), _GRADS)

    for expected, nested_right, nested_left in zip(flat, right, left, strict=True):
        assert_trees_equal(nested_right, expected)
        assert_trees_equal(nested_left, expected)


def _flag_items(flags: dict[str, bool]) -> tuple[tuple[str, bool], ...]:
    return tuple(sorted(flags.items()))


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(data=st.data())
def test_array_hyperparameters_match_python_floats(name, data):
    # Python zeros drop transforms from the chain; arrays keep them (a value that may change at
    # run time must not change the state's structure). The math must be the same either way.
    hp, flags = data.draw(hyperparameters(name))
    with_floats, _ = run_eager(make_optimizer(name, hp, flags), name)
    with_arrays, _ = run_eager(make_optimizer(name, as_arrays(hp), flags), name)

    for a, f in zip(with_arrays, with_floats, strict=True):
        assert_trees_close(a, f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(data=st.data())
def test_jit_matches_eager(name, data):
    hp, flags = data.draw(hyperparameters(name))
    arrays = as_arrays(hp)
    tx = make_optimizer(name, arrays, flags)
    eager, _ = run_eager(tx, name)

    step = jitted_step(name, _flag_items(flags))
    params, state = PARAMS, tx.init(PARAMS)
    for expected in eager:
        params, state = step(arrays, params, state)
        assert_trees_close(params, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(data=st.data())
def test_lax_scan_matches_python_loop(name, data):
    hp, flags = data.draw(hyperparameters(name))
    arrays = as_arrays(hp)
    loop, _ = run_eager(make_optimizer(name, arrays, flags), name)
    scanned = jitted_scan(name, _flag_items(flags))(arrays, PARAMS)

    for k, expected in enumerate(loop):
        assert_trees_close(jax.tree.map(lambda x, k=k: x[k], scanned), expected, 1e-10, 1e-12)


def test_sgd_momentum_zero_as_array_ignores_dampening():
    # torch.optim.SGD keeps no buffer when momentum == 0, so dampening has no effect; an array
    # momentum holding 0 must behave like the Python 0 (which drops the momentum transform).
    grads = [jax.tree.map(lambda p, k=k: jnp.full_like(p, k + 1.0), PARAMS) for k in range(3)]
    python_zero = run_updates(optkit.sgd(0.1, momentum=0.0, dampening=0.5), grads)
    array_zero = run_updates(optkit.sgd(0.1, momentum=jnp.asarray(0.0), dampening=0.5), grads)

    for k, (a, f) in enumerate(zip(array_zero, python_zero, strict=True)):
        np.testing.assert_allclose(f["b"], [-0.1 * (k + 1)] * 2, rtol=1e-15)
        assert_trees_close(a, f, rtol=1e-15)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(data=st.data())
def test_state_structure_is_stable_across_steps(name, data):
    hp, flags = data.draw(hyperparameters(name))
    _, states = run_eager(make_optimizer(name, hp, flags), name)

    initial = avals(states[0])
    for state in states[1:]:
        assert avals(state) == initial


@pytest.mark.parametrize("name", NAMES)
def test_jit_with_python_float_hyperparameters_matches_eager(name):
    info = BY_NAME[name]
    flags = {k: v for k, v in info.typical.items() if isinstance(v, bool)}
    hp = {k: v for k, v in info.typical.items() if k not in flags}
    tx = make_optimizer(name, {**hp, "lr_factor": 0.9}, flags)
    eager, _ = run_eager(tx, name)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad_fn(params), state, params, **UPDATE_ARGS[name])
        return optkit.apply_updates(params, updates), state

    params, state = PARAMS, tx.init(PARAMS)
    for expected in eager:
        params, state = step(params, state)
        assert_trees_close(params, expected, rtol=1e-10, atol=1e-12)
