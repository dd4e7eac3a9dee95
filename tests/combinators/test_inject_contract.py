"""``inject_hyperparams`` keeps optax's contract (``optax/schedules/_inject.py``).

Positional arguments; every numeric argument of the factory injected, defaults included, so
``optax.tree_utils.tree_get``/``tree_set`` and optkit's ``get_hyperparams``/``set_hyperparams``
find them; ``hyperparam_dtype``; ``static_args`` (a string or names) must name parameters;
non-float arrays (PRNG keys, integer arrays) reach the factory untouched. Expected values are
the plain optimizer's (built with the same Python numbers) or the values given.
"""

from __future__ import annotations

import inspect
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit
from optkit import _validation
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import REGISTRY

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "v": jnp.array([[0.3, -0.7]])}
GRADS = jax.tree.map(lambda p: 0.5 * p - 0.1, PARAMS)


def loss(params):
    return sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


# A zero default of these removes a step when the optimizer is built (no momentum buffer, no
# decay transform, no Adagrad decay count): held only when given, so the injected state has the
# plain optimizer's structure (optax's test_optimizers_can_be_wrapped_in_inject_hyperparams).
SWITCHES = {"momentum", "weight_decay", "lr_decay"}


def injectable_defaults(factory) -> dict[str, float]:
    """The factory's arguments whose default is a real number, not structural, and not a zero
    that switches a step off."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(factory).parameters.items()
        if isinstance(parameter.default, numbers.Real)
        and not isinstance(parameter.default, bool)
        and not _validation.is_structural(name)
        and not (name in SWITCHES and parameter.default == 0)
    }


@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_zero_switches_are_held_when_given(info: OptimizerInfo) -> None:
    """momentum=0.0 passed explicitly is held (and settable); left out, the state is the plain
    optimizer's."""
    signature = inspect.signature(info.factory).parameters
    switches = [n for n in SWITCHES if n in signature and signature[n].default == 0]
    if switches:
        given = optkit.inject_hyperparams(info.factory)(**dict.fromkeys(switches, 0.0))
        assert set(switches) <= set(optkit.get_hyperparams(given.init(PARAMS)))
    plain = jax.eval_shape(info.factory().init, PARAMS)
    injected = optkit.inject_hyperparams(info.factory)().init(PARAMS).inner_state
    assert jax.tree.structure(injected) == jax.tree.structure(plain)


@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_every_numeric_default_is_injected_and_found_by_optax_tree_utils(
    info: OptimizerInfo,
) -> None:
    state = optkit.inject_hyperparams(info.factory)().init(PARAMS)
    defaults = injectable_defaults(info.factory)
    assert set(optkit.get_hyperparams(state)) == set(defaults)
    for name, default in defaults.items():
        assert float(optax.tree_utils.tree_get(state, name)) == pytest.approx(default, rel=1e-15)
    name = next(iter(defaults))
    value = 0.5 * defaults[name] if defaults[name] else 0.5
    state = optax.tree_utils.tree_set(state, **{name: value})
    assert float(optkit.get_hyperparams(state)[name]) == value
    state = optkit.set_hyperparams(state, **{name: defaults[name]})
    assert float(optax.tree_utils.tree_get(state, name)) == defaults[name]


def run(tx: optkit.GradientTransformation, state=None, steps: int = 3):
    params = PARAMS
    state = tx.init(params) if state is None else state
    for _ in range(steps):
        updates, state = tx.update(GRADS, state, params)
        params = optkit.apply_updates(params, updates)
    return params


def assert_same(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-14, atol=1e-15)


def test_positional_arguments_bind_as_in_the_factory() -> None:
    tx = optkit.inject_hyperparams(optkit.adam)(0.1, 0.8)
    state = tx.init(PARAMS)
    assert float(optkit.get_hyperparams(state)["learning_rate"]) == 0.1
    assert float(optkit.get_hyperparams(state)["b1"]) == 0.8
    assert_same(run(tx), run(optkit.adam(0.1, 0.8)))


def test_tree_set_b1_changes_the_next_updates_as_building_with_it() -> None:
    tx = optkit.inject_hyperparams(optkit.adam)(0.1)
    state = optax.tree_utils.tree_set(tx.init(PARAMS), b1=0.5)
    assert_same(run(tx, state), run(optkit.adam(0.1, b1=0.5)))


def test_zero_momentum_given_keeps_the_plain_trajectory() -> None:
    # momentum=0.0 given is held in the state, so a momentum buffer exists, unused at 0.
    injected = optkit.inject_hyperparams(optkit.sgd)(0.1, momentum=0.0)
    assert "momentum" in optkit.get_hyperparams(injected.init(PARAMS))
    assert_same(run(injected), run(optkit.sgd(0.1)))
    state = optkit.set_hyperparams(injected.init(PARAMS), momentum=0.9)
    assert_same(run(injected, state), run(optkit.sgd(0.1, momentum=0.9)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_hyperparam_dtype_casts_numbers_and_schedules(dtype) -> None:
    tx = optkit.inject_hyperparams(optkit.sgd, hyperparam_dtype=dtype)(
        learning_rate=lambda count: 0.1 / (1 + count), momentum=0.5
    )
    state = tx.init(PARAMS)
    _, state = tx.update(GRADS, state, PARAMS)
    assert {v.dtype for v in optkit.get_hyperparams(state).values()} == {jnp.dtype(dtype)}
    state = optkit.set_hyperparams(state, momentum=0.25)
    assert optkit.get_hyperparams(state)["momentum"].dtype == jnp.dtype(dtype)


def test_hyperparam_dtype_that_rounds_out_of_range_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"b2=0.999 is 1.0 in hyperparam_dtype bfloat16"):
        optkit.inject_hyperparams(optkit.adam, hyperparam_dtype=jnp.bfloat16)(0.1)
    with pytest.raises(TypeError, match="hyperparam_dtype must be a floating dtype"):
        optkit.inject_hyperparams(optkit.adam, hyperparam_dtype=jnp.int32)


def test_static_args_must_name_parameters() -> None:
    with pytest.raises(ValueError, match=r"static_args names \['lr'\].*'learning_rate'"):
        optkit.inject_hyperparams(optkit.sgd, static_args=("lr",))
    with pytest.raises(ValueError, match=r"static_args names \['mask'\]"):
        optkit.inject_hyperparams(optkit.adam, static_args="mask")


def test_static_args_as_a_string_keeps_the_argument_static() -> None:
    tx = optkit.inject_hyperparams(optkit.sgd, static_args="momentum")(0.1, momentum=0.9)
    assert "momentum" not in optkit.get_hyperparams(tx.init(PARAMS))
    assert_same(run(tx), run(optkit.sgd(0.1, momentum=0.9)))


def test_non_float_arrays_reach_the_factory_untouched() -> None:
    seen = {}

    def noisy_sgd(learning_rate=0.1, key=None, steps=None, scale=1.0):
        seen.update(key=key, steps=steps, scale=scale)
        return optkit.sgd(learning_rate)

    key = jax.random.key(0)
    steps = jnp.arange(3)
    tx = optkit.inject_hyperparams(noisy_sgd)(0.1, key, steps)
    state = tx.init(PARAMS)
    tx.update(GRADS, state, PARAMS)
    assert seen["key"] is key and seen["steps"] is steps
    assert set(optkit.get_hyperparams(state)) == {"learning_rate", "scale"}


def test_a_factory_without_signature_takes_keywords() -> None:
    class Factory:
        __signature__ = None

        def __call__(self, **kwargs):
            return optkit.sgd(**kwargs)

    factory = Factory()
    tx = optkit.inject_hyperparams(factory)(learning_rate=0.1)
    assert set(optkit.get_hyperparams(tx.init(PARAMS))) == {"learning_rate"}
