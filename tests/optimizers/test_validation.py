"""Every hyperparameter is checked when the optimizer is built, with a message naming it."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit

OPTIMIZERS = {
    "sgd": optkit.sgd,
    "adam": optkit.adam,
    "adamw": optkit.adamw,
    "adagrad": optkit.adagrad,
    "rmsprop": optkit.rmsprop,
}

# (optimizer, argument) pairs that must be >= 0 and not NaN.
NON_NEGATIVE = [
    *((name, "learning_rate") for name in OPTIMIZERS),
    *((name, "weight_decay") for name in OPTIMIZERS),
    *((name, "eps") for name in ("adam", "adamw", "adagrad", "rmsprop")),
    ("sgd", "momentum"),
    ("rmsprop", "momentum"),
    ("adagrad", "lr_decay"),
    ("adagrad", "initial_accumulator_value"),
]

# (optimizer, argument) pairs that must lie in [0, 1).
DECAY_RATES = [
    ("adam", "b1"),
    ("adam", "b2"),
    ("adamw", "b1"),
    ("adamw", "b2"),
]


@pytest.mark.parametrize(("optimizer", "argument"), NON_NEGATIVE)
@pytest.mark.parametrize("bad", [-1e-3, -1, math.nan, np.float32(-0.5), jnp.asarray(-2.0)])
def test_negative_or_nan_is_rejected(optimizer, argument, bad):
    with pytest.raises(ValueError, match=rf"^{argument} must be in \[0.0, inf\]"):
        OPTIMIZERS[optimizer](**{argument: bad})


@pytest.mark.parametrize(("optimizer", "argument"), NON_NEGATIVE)
def test_zero_is_accepted(optimizer, argument):
    tx = OPTIMIZERS[optimizer](**{argument: 0.0})
    assert isinstance(tx, optkit.GradientTransformation)


@pytest.mark.parametrize(("optimizer", "argument"), DECAY_RATES)
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan])
def test_decay_rate_outside_unit_interval_is_rejected(optimizer, argument, bad):
    with pytest.raises(ValueError, match=rf"^{argument} must be in \[0.0, 1.0\)"):
        OPTIMIZERS[optimizer](**{argument: bad})


@pytest.mark.parametrize(("optimizer", "argument"), DECAY_RATES)
@pytest.mark.parametrize("good", [0.0, 0.5, 0.999999])
def test_decay_rate_inside_unit_interval_is_accepted(optimizer, argument, good):
    OPTIMIZERS[optimizer](**{argument: good})


def test_nesterov_requires_momentum():
    with pytest.raises(ValueError, match=r"nesterov=True requires momentum"):
        optkit.sgd(0.1, nesterov=True)


def test_nesterov_forbids_dampening():
    with pytest.raises(ValueError, match=r"nesterov=True requires dampening=0, got dampening=0.1"):
        optkit.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=True)


def test_nesterov_with_momentum_and_no_dampening_is_accepted():
    optkit.sgd(0.1, momentum=0.9, nesterov=True)


def test_trace_checks_nesterov_too():
    with pytest.raises(ValueError, match="nesterov=True requires momentum"):
        optkit.trace(0.0, nesterov=True)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_dampening_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"^dampening must be in \[0.0, 1.0\]"):
        optkit.sgd(0.1, momentum=0.9, dampening=bad)


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (optkit.sgd, "nesterov"),
        (optkit.adam, "amsgrad"),
        (optkit.adamw, "amsgrad"),
        (optkit.rmsprop, "centered"),
        (optkit.sgd, "maximize"),
        (optkit.adam, "maximize"),
        (optkit.adagrad, "maximize"),
    ],
)
def test_flags_must_be_bools(factory, argument):
    with pytest.raises(TypeError, match=rf"^{argument} must be a bool, got str"):
        factory(**{argument: "yes"})


def test_array_hyperparameter_must_be_a_scalar():
    # A vector learning rate would silently broadcast over every leaf.
    with pytest.raises(
        ValueError, match=r"learning_rate must be a scalar, got an array of shape \(3,\)"
    ):
        optkit.adam(learning_rate=jnp.ones(3))


@pytest.mark.parametrize("bad", ["0.1", None, [0.1]])
def test_non_numeric_hyperparameter_is_a_type_error(bad):
    with pytest.raises(TypeError, match=r"^learning_rate must be a number"):
        optkit.sgd(learning_rate=bad)


def test_bool_is_not_a_number():
    with pytest.raises(TypeError, match=r"^momentum must be a number, got the bool True"):
        optkit.sgd(momentum=True)


def test_complex_array_is_rejected():
    with pytest.raises(TypeError, match="eps must be a real number"):
        optkit.adam(eps=jnp.asarray(1e-8 + 1j))


def test_schedule_is_accepted_as_learning_rate():
    tx = optkit.adam(learning_rate=lambda count: 1e-3 * 0.5**count)
    params = jnp.ones(2, jnp.float32)
    updates, _ = tx.update(jnp.ones(2, jnp.float32), tx.init(params), params)
    assert updates.shape == (2,)


def test_schedule_returning_a_vector_is_rejected():
    tx = optkit.sgd(learning_rate=lambda count: jnp.ones(2))
    params = jnp.ones(2, jnp.float32)
    with pytest.raises(ValueError, match="schedule returned shape"):
        tx.update(params, tx.init(params), params)


def test_traced_hyperparameters_are_accepted():
    # Under jit the value is unknown: building the optimizer must not try to read it.
    @jax.jit
    def step(lr, params):
        tx = optkit.sgd(learning_rate=lr, momentum=0.9)
        updates, _ = tx.update(params, tx.init(params), params)
        return optkit.apply_updates(params, updates)

    out = step(jnp.asarray(0.5), jnp.ones(2))
    np.testing.assert_allclose(out, 0.5)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: optkit.clip(-1.0), r"^max_delta must be in"),
        (lambda: optkit.clip_by_global_norm(math.nan), r"^max_norm must be in"),
        (lambda: optkit.scale_by_adam(eps_root=-1.0), r"^eps_root must be in"),
        (lambda: optkit.scale_by_rms(alpha=1.5), r"^alpha must be in \[0.0, 1.0\]"),
        (
            lambda: optkit.scale_by_rss(initial_accumulator_value=-0.1),
            r"^initial_accumulator_value",
        ),
        (lambda: optkit.add_decayed_weights(-0.1), r"^weight_decay must be in"),
        (lambda: optkit.add_l2_decay(math.nan), r"^weight_decay must be in"),
        (lambda: optkit.scale_by_learning_rate(-1.0), r"^learning_rate must be in"),
        (lambda: optkit.trace(-0.9), r"^decay must be in"),
        (lambda: optkit.scale(math.nan), r"^step_size must be in \[-inf, inf\], got NaN"),
    ],
)
def test_primitives_validate_too(build, message):
    with pytest.raises(ValueError, match=message):
        build()


class TestTreeMismatch:
    """An update whose gradients do not match the state fails with the path in the message."""

    params: ClassVar[dict] = {"layer": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}

    @pytest.mark.parametrize("name", list(OPTIMIZERS))
    def test_missing_leaf(self, name):
        tx = OPTIMIZERS[name](momentum=0.9) if name in ("sgd", "rmsprop") else OPTIMIZERS[name]()
        state = tx.init(self.params)
        grads = {"layer": {"kernel": jnp.ones((2, 3))}}
        with pytest.raises(ValueError, match=r"'layer/bias'"):
            tx.update(grads, state, self.params)

    @pytest.mark.parametrize("name", list(OPTIMIZERS))
    def test_wrong_shape(self, name):
        tx = OPTIMIZERS[name](momentum=0.9) if name in ("sgd", "rmsprop") else OPTIMIZERS[name]()
        state = tx.init(self.params)
        grads = {"layer": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(3)}}
        with pytest.raises(ValueError, match=r"leaf 'layer/kernel' has shape \(3, 2\)"):
            tx.update(grads, state, self.params)

    def test_extra_leaf_is_named(self):
        tx = optkit.adam()
        state = tx.init(self.params)
        grads = {"layer": {**self.params["layer"], "scale": jnp.ones(3)}}
        with pytest.raises(ValueError, match=r"not in optimizer state: 'layer/scale'"):
            tx.update(grads, state, self.params)

    def test_list_indices_are_path_segments(self):
        tx = optkit.adam()
        params = [jnp.ones(2), {"w": jnp.ones(3)}]
        state = tx.init(params)
        with pytest.raises(ValueError, match=r"leaf '1/w' has shape \(4,\)"):
            tx.update([jnp.ones(2), {"w": jnp.ones(4)}], state, params)
