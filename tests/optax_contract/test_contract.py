"""The optax contract: what a user mixing optax and optkit relies on, checked against optax itself
(or the closed-form math of a schedule).

``mu_dtype`` / ``accumulator_dtype`` / ``sgd(momentum=None)``, masks of 0/1 and NumPy/JAX bools and
callable pytrees, ``partition(param_labels=...)``, extra arguments reaching only the transforms
that take them, ``optax.tree.map_params`` on ``masked``/``partition`` states, ``None`` updates
through ``apply_updates`` and ``add_decayed_weights``, and schedules ending at any finite value.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit
from optkit import schedules

PARAMS = {
    "w": jnp.array([[0.5, -1.5], [2.0, 0.25]], jnp.float32),
    "b": jnp.array([0.1, -0.3], jnp.float32),
}
GRADS = [
    jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) + 0.1 * k, PARAMS) for k in range(5)
]  # five steps of made-up gradients


def run(tx, params=PARAMS, grads=GRADS, apply=optkit.apply_updates):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = apply(params, updates)
    return params, state


def assert_close(actual, expected, rtol, atol=0.0):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol
        )


# --- state dtypes --------------------------------------------------------------------------------


def test_sgd_accumulator_dtype_keeps_a_bfloat16_buffer():
    ours, state = run(optkit.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16))
    trace = optax.tree.get(state, "trace")
    assert {leaf.dtype for leaf in jax.tree.leaves(trace)} == {jnp.dtype(jnp.bfloat16)}
    # The step reads the stored (rounded) buffer, as torch reads its momentum buffer; optax
    # steps with the value before rounding it, so the two agree to bfloat16's resolution.
    theirs, _ = run(optax.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16))
    assert_close(ours, theirs, rtol=1e-2, atol=2e-3)
    exact, _ = run(optkit.sgd(0.1, momentum=0.9))
    assert_close(ours, exact, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_mu_dtype_keeps_a_bfloat16_first_moment(name):
    # optax's AdamW decay default differs (1e-4); give both torch's 1e-2.
    decay = {"weight_decay": 1e-2} if name == "adamw" else {}
    ours, our_state = run(getattr(optkit, name)(0.1, mu_dtype=jnp.bfloat16, **decay))
    state = optax.tree.get(our_state, "ScaleByAdamState")
    assert {leaf.dtype for leaf in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {leaf.dtype for leaf in jax.tree.leaves(state.nu)} == {jnp.dtype(jnp.float32)}
    # The step reads the stored (rounded) moment, optax's the moment before rounding: the two
    # agree to bfloat16's resolution (2**-8 of the step) over these five steps.
    theirs, _ = run(getattr(optax, name)(0.1, mu_dtype=jnp.bfloat16, **decay))
    assert_close(ours, theirs, rtol=1e-2, atol=2e-3)
    exact, _ = run(getattr(optkit, name)(0.1, **decay))
    assert_close(ours, exact, rtol=1e-2, atol=2e-3)


def test_adam_mu_dtype_default_is_the_params_dtype():
    params = {"w": jnp.ones(2, jnp.bfloat16)}
    state = optkit.adam(0.1).init(params)
    assert optax.tree.get(state, "mu")["w"].dtype == jnp.bfloat16


def test_sgd_momentum_none_is_plain_sgd():
    ours, state = run(optkit.sgd(0.1, momentum=None))
    theirs, _ = run(optax.sgd(0.1, momentum=None))
    assert optax.tree.get_all_with_path(state, "trace") == []
    assert optkit.sgd(0.1, momentum=None).description.arguments["momentum"] == 0.0
    assert_close(ours, theirs, rtol=1e-7)


# --- masks ---------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Layer:
    """A callable pytree, as an equinox Module is."""

    w: object
    b: object

    def __call__(self, x):
        return self.w @ x + self.b


LAYER = Layer(w=PARAMS["w"], b=PARAMS["b"])
LAYER_GRADS = [Layer(w=g["w"], b=g["b"]) for g in GRADS]


@pytest.mark.parametrize(
    "mask",
    [
        Layer(w=1, b=0),
        Layer(w=np.True_, b=np.False_),
        Layer(w=jnp.array(True), b=jnp.array(False)),
        Layer(w=jnp.array(1, jnp.int32), b=jnp.array(0, jnp.int32)),
        lambda layer: Layer(w=True, b=False),
    ],
    ids=["ints", "numpy-bools", "jax-bools", "jax-ints", "function"],
)
def test_masked_accepts_optax_masks(mask):
    tx = optkit.masked(optkit.sgd(0.1, momentum=0.9), mask)
    ours, _ = run(tx, LAYER, LAYER_GRADS)
    theirs, _ = run(
        optax.masked(optax.sgd(0.1, momentum=0.9), Layer(w=True, b=False)),
        LAYER,
        LAYER_GRADS,
        apply=optax.apply_updates,
    )
    assert_close(ours, theirs, rtol=1e-6)


def test_partition_param_labels_keyword_and_map_params():
    labels = {"w": "adam", "b": "sgd"}
    tx = optkit.partition(
        {"adam": optkit.adam(0.1), "sgd": optkit.sgd(0.1, momentum=0.9)}, param_labels=labels
    )
    reference = optax.partition(
        {"adam": optax.adam(0.1), "sgd": optax.sgd(0.1, momentum=0.9)}, param_labels=labels
    )
    ours, state = run(tx)
    theirs, _ = run(reference, apply=optax.apply_updates)
    assert_close(ours, theirs, rtol=1e-5)

    # Every copy of the params in the state (moments, momentum) is mapped, nothing else.
    for map_params in (optax.tree.map_params, optax.tree_utils.tree_map_params):
        mapped = map_params(tx, lambda leaf: leaf + 1, state)
        mu = optax.tree.get(mapped, "mu")
        np.testing.assert_array_equal(mu["w"], optax.tree.get(state, "mu")["w"] + 1)
        assert isinstance(mu["b"], optkit.MaskedNode)
        trace = optax.tree.get(mapped, "trace")
        np.testing.assert_array_equal(trace["b"], optax.tree.get(state, "trace")["b"] + 1)
        counts = [c for _, c in optax.tree.get_all_with_path(mapped, "count")]
        assert [int(c) for c in counts] == [5, 5]


def plain_scale(factor):
    """A plain optax transform: its update takes no extra arguments."""
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(lambda u: factor * u, updates), state),
    )


def scale_by_value():
    """An extra-args transform: multiplies the updates by ``value``."""

    def update(updates, state, params=None, *, value, **extra_args):
        return jax.tree.map(lambda u: value * u, updates), state

    return optkit.GradientTransformation(lambda params: optkit.EmptyState(), update)


@pytest.mark.parametrize("wrap", ["masked", "partition"])
def test_extra_args_reach_only_the_transforms_that_take_them(wrap):
    if wrap == "masked":
        tx = optkit.chain(
            optkit.masked(plain_scale(2.0), {"w": True, "b": False}),
            optkit.masked(scale_by_value(), {"w": False, "b": True}),
        )
    else:
        tx = optkit.partition(
            {"plain": plain_scale(2.0), "value": scale_by_value()}, {"w": "plain", "b": "value"}
        )
    updates, _ = tx.update(GRADS[0], tx.init(PARAMS), PARAMS, value=3.0)
    np.testing.assert_array_equal(updates["w"], 2.0 * GRADS[0]["w"])
    np.testing.assert_array_equal(updates["b"], 3.0 * GRADS[0]["b"])


def test_map_params_on_masked_state_matches_optax():
    mask = {"w": True, "b": False}
    ours = optkit.masked(optkit.adam(0.1), mask)
    theirs = optax.masked(optax.adam(0.1), mask)
    mapped = optax.tree.get(optax.tree.map_params(ours, jnp.shape, ours.init(PARAMS)), "mu")
    expected = optax.tree.get(optax.tree.map_params(theirs, jnp.shape, theirs.init(PARAMS)), "mu")
    assert mapped["w"] == expected["w"] == (2, 2)
    assert isinstance(mapped["b"], optkit.MaskedNode)
    assert isinstance(expected["b"], optax.MaskedNode)


# --- None updates --------------------------------------------------------------------------------

FROZEN = {"w": PARAMS["w"], "b": None}


def test_apply_updates_none_params_stay_none_as_in_optax():
    updates = {"w": GRADS[0]["w"], "b": GRADS[0]["b"]}
    ours = optkit.apply_updates(FROZEN, updates)
    theirs = optax.apply_updates(FROZEN, updates)
    assert ours["b"] is None and theirs["b"] is None
    np.testing.assert_array_equal(ours["w"], theirs["w"])
    assert optkit.apply_updates(None, jnp.ones(3)) is None


def test_apply_updates_none_update_leaves_its_param():
    ours = optkit.apply_updates(PARAMS, {"w": GRADS[0]["w"], "b": None})
    np.testing.assert_array_equal(ours["b"], PARAMS["b"])
    np.testing.assert_array_equal(ours["w"], PARAMS["w"] + GRADS[0]["w"])


@pytest.mark.parametrize("mask", [None, {"w": True, "b": False}])
def test_add_decayed_weights_passes_none_updates_through_as_optax(mask):
    updates = {"w": GRADS[0]["w"], "b": None}
    ours_tx, theirs_tx = optkit.add_decayed_weights(0.1, mask), optax.add_decayed_weights(0.1, mask)
    ours, _ = ours_tx.update(updates, ours_tx.init(PARAMS), PARAMS)
    theirs, _ = theirs_tx.update(updates, theirs_tx.init(PARAMS), PARAMS)
    assert ours["b"] is None and theirs["b"] is None
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-7)
    whole, _ = optkit.add_decayed_weights(0.1).update(None, optkit.EmptyState(), PARAMS)
    assert whole is None


# --- schedules ending at any finite value --------------------------------------------------------

COUNTS = jnp.arange(0, 40)


@pytest.mark.parametrize(("peak", "end"), [(1.0, -0.5), (0.5, 2.0), (0.0, -3.0)])
def test_warmup_cosine_decay_any_end_value_matches_optax(peak, end):
    ours = schedules.warmup_cosine_decay(0.2, peak, 10, 30, end_value=end, exponent=2.0)
    theirs = optax.warmup_cosine_decay_schedule(0.2, peak, 10, 30, end_value=end, exponent=2.0)
    np.testing.assert_allclose(ours(COUNTS), theirs(COUNTS), rtol=1e-6, atol=1e-7)


def cosine(learning_rate, eta_min, count, period):
    """torch's CosineAnnealingLR in closed form (its docstring's formula)."""
    return eta_min + (learning_rate - eta_min) * (1 + math.cos(math.pi * count / period)) / 2


def test_cosine_annealing_negative_eta_min():
    schedule = schedules.cosine_annealing_lr(0.1, T_max=20, eta_min=-0.05)
    expected = [cosine(0.1, -0.05, k, 20) for k in range(21)]
    np.testing.assert_allclose(schedule(jnp.arange(21)), expected, rtol=1e-6, atol=1e-8)
    restarts = schedules.cosine_annealing_warm_restarts(0.1, T_0=10, eta_min=-0.05)
    expected = [cosine(0.1, -0.05, k % 10, 10) for k in range(20)]
    np.testing.assert_allclose(restarts(jnp.arange(20)), expected, rtol=1e-6, atol=1e-8)


def test_other_end_values_accept_any_finite_number():
    assert float(schedules.swa_lr(0.1, swa_lr=-0.01, anneal_epochs=5)(jnp.array(10))) == (
        pytest.approx(-0.01)
    )
    polynomial = schedules.get_scheduler(
        "polynomial", 0.1, 0, 10, scheduler_specific_kwargs={"lr_end": -0.1}
    )
    assert float(polynomial(jnp.array(10))) == pytest.approx(-0.1)
    rising = schedules.get_scheduler(
        "cosine_with_min_lr", 0.1, 0, 10, scheduler_specific_kwargs={"min_lr_rate": 2.0}
    )
    assert float(rising(jnp.array(10))) == pytest.approx(0.2)
