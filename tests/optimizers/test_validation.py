"""Every hyperparameter is checked when the optimizer is built, with a message naming it.

The generic tests iterate the registry: every numeric argument of every optimizer is checked
against its range in ``optkit._validation.RANGES`` (the table ``set_hyperparams`` uses too), and
every flag must be a bool.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import _validation
from tests.support.registry import BY_NAME, NAMES, REGISTRY


def _bad_and_good(name: str) -> tuple[list, list, str]:
    """Values outside and inside a hyperparameter's range, and the start of the message."""
    allowed = _validation.RANGES[name]
    low, high, high_inclusive = allowed.low, allowed.high, allowed.high_inclusive
    if allowed.integer:
        return _bad_and_good_integers(name, low, high)
    bad: list = [math.nan]
    good: list = []
    if low is not None:
        bad += [low - 1e-3, np.float32(low - 0.5)]
        bad += [] if allowed.static else [jnp.asarray(low - 2.0)]  # static: arrays are a TypeError
        if allowed.low_inclusive:
            good.append(low)
        else:
            bad.append(low)
    if high is not None:
        bad += [high + 0.5] + ([] if high_inclusive else [high])
        good.append(high if high_inclusive else high - 1e-6)
    if low is not None and high is not None:
        good.append((low + high) / 2)
    elif low is not None:
        good.append(low + 0.5)
    shown_low = "-inf" if low is None else low
    shown_high = "inf" if high is None else high
    lower = "[" if allowed.low_inclusive else "("
    upper = "]" if high_inclusive else ")"
    return bad, good, re.escape(f"{name} must be in {lower}{shown_low}, {shown_high}{upper}")


def _bad_and_good_integers(name: str, low, high) -> tuple[list, list, str]:
    bad: list = [1.5, math.nan, np.float32(2.0), True]
    good: list = []
    if low is not None:
        bad.append(int(low) - 1)
        good += [int(low), int(low) + 1]
    if high is not None:
        bad.append(int(high) + 1)
        good.append(int(high))
    shown = f"[{'-inf' if low is None else int(low)}, {'inf' if high is None else int(high)}]"
    return bad, good, re.escape(f"{name} must be an integer in {shown}")


# (optimizer, argument): every numeric argument of every registry row.
NUMERIC = [(info.name, name) for info in REGISTRY for name in info.numeric_arguments()]
FLAGS = [(info.name, name) for info in REGISTRY for name in info.flags()]


@pytest.mark.parametrize(("optimizer", "argument"), NUMERIC)
def test_out_of_range_or_nan_is_rejected_naming_the_argument(optimizer, argument):
    bad_values, _, message = _bad_and_good(argument)
    for bad in bad_values:
        with pytest.raises(ValueError, match=rf"^{message}"):
            BY_NAME[optimizer].factory(**{argument: bad})


@pytest.mark.parametrize(("optimizer", "argument"), NUMERIC)
def test_values_in_range_are_accepted(optimizer, argument):
    _, good_values, _ = _bad_and_good(argument)
    for good in good_values:
        tx = BY_NAME[optimizer].factory(**{argument: good})
        assert isinstance(tx, optkit.GradientTransformation)


@pytest.mark.parametrize(("optimizer", "argument"), FLAGS)
def test_flags_must_be_bools(optimizer, argument):
    with pytest.raises(TypeError, match=rf"^{argument} must be a bool, got str"):
        BY_NAME[optimizer].factory(**{argument: "yes"})


@pytest.mark.parametrize("optimizer", NAMES)
def test_array_learning_rate_must_be_a_scalar(optimizer):
    # A vector learning rate would silently broadcast over every leaf.
    with pytest.raises(
        ValueError, match=r"learning_rate must be a scalar, got an array of shape \(3,\)"
    ):
        BY_NAME[optimizer].factory(learning_rate=jnp.ones(3))


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
    # Checked on the count 0 when the optimizer is built (tests/reliability covers the rest).
    with pytest.raises(ValueError, match=r"learning_rate .* returned shape \(2,\)"):
        optkit.sgd(learning_rate=lambda count: jnp.ones(2))


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

    @pytest.mark.parametrize("name", NAMES)
    def test_missing_leaf(self, name):
        tx = BY_NAME[name].make()
        state = tx.init(self.params)
        grads = {"layer": {"kernel": jnp.ones((2, 3))}}
        with pytest.raises(ValueError, match=r"'layer/bias'"):
            tx.update(grads, state, self.params)

    @pytest.mark.parametrize("name", NAMES)
    def test_wrong_shape(self, name):
        tx = BY_NAME[name].make()
        state = tx.init(self.params)
        grads = {"layer": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(3)}}
        with pytest.raises(ValueError, match=r"leaf 'layer/kernel' has shape \(3, 2\)"):
            tx.update(grads, state, self.params)

    def test_extra_leaf_is_named(self):
        tx = optkit.adam()
        state = tx.init(self.params)
        grads = {"layer": {**self.params["layer"], "scale": jnp.ones(3)}}
        with pytest.raises(ValueError, match=r"not in params: 'layer/scale'"):
            tx.update(grads, state, self.params)

    def test_list_indices_are_path_segments(self):
        tx = optkit.adam()
        params = [jnp.ones(2), {"w": jnp.ones(3)}]
        state = tx.init(params)
        with pytest.raises(ValueError, match=r"leaf '1/w' has shape \(4,\)"):
            tx.update([jnp.ones(2), {"w": jnp.ones(4)}], state, params)
