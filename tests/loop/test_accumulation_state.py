"""``accumulate_gradients``'s state: untouched while accumulating, jitted with donated buffers,
checkpointed in the middle of a cycle; ``optimizer_stepped``; extra arguments; errors.

The wrapped optimizer is the torch set-up most likely to break a wrapper: param groups of an
``inject_hyperparams`` AdamW whose learning rate follows a schedule, over float32 and bfloat16
params.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

import optkit
from optkit import schedules

K = 3
MICRO_STEPS = 8  # two optimizer steps, then two micro-batches into the third


def make_inner() -> optkit.GradientTransformation:
    groups = [{"params": "w"}, {"params": "b", "weight_decay": 0.0}]
    return optkit.param_groups(
        optkit.inject_hyperparams(optkit.adamw),
        groups,
        learning_rate=schedules.step_lr(0.1, step_size=1, gamma=0.5),
        weight_decay=0.01,
    )


def make_tx(every_k: int = K) -> optkit.GradientTransformation:
    return optkit.accumulate_gradients(make_inner(), every_k)


def make_params() -> dict[str, jax.Array]:
    return {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
            "b": jnp.array([0.5, -0.25, 1.0, 2.0], jnp.bfloat16)}  # fmt: skip


def gradients(i: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(i)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), make_params())


def train_step(tx: optkit.GradientTransformation) -> Any:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    return step


def run(step: Any, params: Any, state: Any, micro_steps: range) -> tuple[Any, Any]:
    for i in micro_steps:
        params, state = step(params, state, gradients(i))
    return params, state


def assert_bitwise_equal(actual: Any, expected: Any) -> None:
    """Same tree structure, and leaf by leaf the same dtype, shape and bytes."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    pairs = zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True)
    for (path, got), want in pairs:
        where = jax.tree_util.keystr(path)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), where


def inner_counts(state: optkit.AccumulateGradientsState) -> list[int]:
    return [int(group.inner_state.count) for group in state.inner_state.groups]


@functools.cache
def jitted_update() -> tuple[optkit.GradientTransformation, Any]:
    tx = make_tx()
    return tx, jax.jit(tx.update)


@functools.cache
def jitted_step() -> tuple[optkit.GradientTransformation, Any]:
    """One compiled training step shared by the tests that need the uninterrupted run."""
    tx = make_tx()
    return tx, jax.jit(train_step(tx))


@functools.cache
def straight_run() -> tuple[Any, Any]:
    """Params and state after MICRO_STEPS uninterrupted micro-steps."""
    tx, step = jitted_step()
    return run(step, make_params(), tx.init(make_params()), range(MICRO_STEPS))


# --- accumulating steps ---------------------------------------------------------------------


def test_accumulating_updates_are_zero_and_leave_inner_state_untouched():
    tx, update = jitted_update()
    params = make_params()
    state = tx.init(params)
    assert not optkit.optimizer_stepped(state)
    for i in range(MICRO_STEPS):
        updates, new_state = update(gradients(i), state, params)
        boundary = (i + 1) % K == 0
        assert bool(optkit.optimizer_stepped(new_state)) == boundary
        assert int(new_state.micro_step) == (i + 1) % K
        if boundary:
            assert inner_counts(new_state) == [inner_counts(state)[0] + 1] * 2
            assert all(not jnp.any(a) for a in jax.tree.leaves(new_state.accumulator))
            assert all(jnp.all(u != 0) for u in jax.tree.leaves(updates))
        else:
            assert_bitwise_equal(new_state.inner_state, state.inner_state)
            assert_bitwise_equal(updates, jax.tree.map(jnp.zeros_like, params))  # +0.0, dtypes
            assert not any(
                jnp.array_equal(a, b)
                for a, b in zip(
                    jax.tree.leaves(new_state.accumulator),
                    jax.tree.leaves(state.accumulator),
                    strict=True,
                )
            )
        params, state = optkit.apply_updates(params, updates), new_state
    assert inner_counts(state) == [MICRO_STEPS // K] * 2


def test_state_is_arrays_and_jitted_init_matches():
    tx = make_tx()
    params = make_params()
    state = tx.init(params)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    assert (state.micro_step.dtype, state.stepped.dtype) == (jnp.int32, jnp.bool_)
    assert {a.dtype for a in jax.tree.leaves(state.accumulator)} == {jnp.dtype(jnp.float32)}
    assert_bitwise_equal(jax.jit(tx.init)(params), state)


def test_every_k_1_is_a_pass_through():
    tx, alone = make_tx(1), make_inner()
    update, alone_update = jax.jit(tx.update), jax.jit(alone.update)
    params = make_params()
    state, alone_state = tx.init(params), alone.init(params)
    for i in range(3):
        updates, state = update(gradients(i), state, params)
        expected, alone_state = alone_update(gradients(i), alone_state, params)
        assert_bitwise_equal(updates, expected)
        assert_bitwise_equal(state.inner_state, alone_state)
        assert optkit.optimizer_stepped(state) and int(state.micro_step) == 0
        params = optkit.apply_updates(params, updates)


def test_nonfinite_micro_batch_reaches_inner_once():
    """Exact zeros while accumulating (optax.MultiSteps returns NaN here: 0 * inf), and the
    non-finite sum at the k-th update, as p.grad reaches torch's opt.step()."""
    tx = optkit.accumulate_gradients(optkit.identity(), K)
    params = jnp.zeros(2)
    state = tx.init(params)
    updates, state = tx.update(jnp.array([jnp.inf, 1.0]), state, params)
    assert updates.tolist() == [0.0, 0.0]
    for _ in range(K - 1):
        updates, state = tx.update(jnp.array([1.0, 1.0]), state, params)
    assert updates.tolist() == [np.inf, 1.0]


# --- extra arguments ----------------------------------------------------------------------------


def value_recorder() -> optkit.GradientTransformation:
    """An inner optimizer whose state is the last ``value=`` it received."""

    def update(updates, state, params=None, *, value):
        return updates, jnp.asarray(value, jnp.float32)

    return optkit.GradientTransformation(lambda params: jnp.float32(-1.0), update)


def test_extra_args_reach_inner_on_the_boundary_only():
    tx = optkit.accumulate_gradients(value_recorder(), K)
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(2))
    seen = []
    for i in range(2 * K):
        _, state = update(jnp.ones(2), state, value=jnp.float32(i))
        seen.append(float(state.inner_state))
    assert seen == [-1.0, -1.0, 2.0, 2.0, 2.0, 5.0]


def test_optax_inner_without_extra_args():
    tx = optkit.accumulate_gradients(optax.sgd(1.0), 2)
    state = tx.init(jnp.zeros(2))
    _, state = tx.update(jnp.array([1.0, 2.0]), state, value=1.0)
    updates, state = tx.update(jnp.array([3.0, 4.0]), state, value=2.0)
    assert updates.tolist() == [-2.0, -3.0]


def test_optax_inner_state_keeps_its_dtypes():
    """optax's Adam would promote its bfloat16 moments when fed float32 gradients; the
    wrapper keeps each buffer's dtype, so both branches of its cond agree."""
    tx = optkit.accumulate_gradients(optax.adam(0.1), 2)
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(2):
        updates, state = update({"w": jnp.ones(3, jnp.float32)}, state, params)
    assert state.inner_state[0].mu["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-3)


# --- jit with donated buffers, orbax ------------------------------------------------------------


def test_jit_with_donated_state_matches_and_compiles_once():
    tx = make_tx()
    donated = jax.jit(train_step(tx), donate_argnums=(0, 1))
    params, state = make_params(), tx.init(make_params())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Some donated buffers were not usable" fails the test
        for i in range(MICRO_STEPS):
            accumulator = state.accumulator["w"]
            params, state = donated(params, state, gradients(i))
            assert accumulator.is_deleted()
    assert_bitwise_equal((params, state), straight_run())
    assert donated._cache_size() == 1


def test_orbax_round_trip_in_the_middle_of_a_cycle(tmp_path):
    tx, step = jitted_step()
    resume_at = K + 1
    params, state = run(step, make_params(), tx.init(make_params()), range(resume_at))
    assert int(state.micro_step) == 1 and jnp.any(state.accumulator["w"] != 0)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    # As after a restart: a new optimizer, a new jit, the target's structure from eval_shape.
    tx = make_tx()
    step = jax.jit(train_step(tx))
    target = jax.eval_shape(lambda p: {"params": p, "opt_state": tx.init(p)}, make_params())
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert_bitwise_equal(restored["opt_state"], state)
    resumed = run(step, restored["params"], restored["opt_state"], range(resume_at, MICRO_STEPS))
    assert_bitwise_equal(resumed, straight_run())


# --- optimizer_stepped --------------------------------------------------------------------------


class Wrapper(NamedTuple):
    """Another wrapper's state: a counter and the wrapped state."""

    count: jax.Array
    inner_state: Any


def stepped_state(wrap: Any) -> Any:
    """A state after one update at a boundary (every_k=1), wrapped by ``wrap``."""
    tx = optkit.accumulate_gradients(optkit.sgd(0.1), 1)
    _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
    return wrap(state)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: (optkit.EmptyState(), s),
        lambda s: Wrapper(jnp.int32(3), s),
        lambda s: {"model": [s]},
        lambda s: optkit.InjectHyperparamsState(jnp.int32(0), {}, {}, (s,)),
        lambda s: train_state.TrainState(step=0, apply_fn=None, params={}, tx=None, opt_state=s),
    ],
    ids=["itself", "chain", "wrapper", "dict", "inject_hyperparams", "flax_train_state"],
)
def test_optimizer_stepped_finds_the_state(wrap):
    state = stepped_state(wrap)
    assert optkit.optimizer_stepped(state).dtype == jnp.bool_
    assert optkit.optimizer_stepped(state)
    assert jax.jit(optkit.optimizer_stepped)(state)


def test_optimizer_stepped_around_param_groups_and_inject_hyperparams():
    tx, update = jitted_update()
    params = make_params()
    _, state = update(gradients(0), tx.init(params), params)
    assert not optkit.optimizer_stepped(Wrapper(jnp.int32(0), state))


def test_optimizer_stepped_needs_exactly_one_state():
    with pytest.raises(ValueError, match="holds none; wrap the optimizer"):
        optkit.optimizer_stepped(optkit.adam(1e-3).init(jnp.zeros(2)))
    per_group = optkit.param_groups(
        lambda **kw: optkit.accumulate_gradients(optkit.sgd(**kw), 2),
        [{"params": "a"}, {"params": "b"}],
        learning_rate=0.1,
    )
    with pytest.raises(ValueError, match=r"holds 2 .*one per param group"):
        optkit.optimizer_stepped(per_group.init({"a": jnp.zeros(1), "b": jnp.zeros(1)}))
    nested = optkit.accumulate_gradients(optkit.accumulate_gradients(optkit.sgd(0.1), 2), 2)
    with pytest.raises(ValueError, match="holds 2"):
        optkit.optimizer_stepped(nested.init(jnp.zeros(1)))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("every_k", [0, -2, 2.5, True, "3", None, np.float64(2.0)])
def test_every_k_must_be_a_positive_integer(every_k):
    with pytest.raises(ValueError, match="every_k must be an integer in \\[1, inf\\]"):
        optkit.accumulate_gradients(optkit.sgd(0.1), every_k)


def test_every_k_accepts_numpy_integers():
    tx = optkit.accumulate_gradients(optkit.sgd(0.1), np.int64(2))
    assert int(tx.init(jnp.zeros(1)).micro_step) == 0


@pytest.mark.parametrize("dtype", ["int32", jnp.int8, jnp.bool_, "nope", 3])
def test_accumulator_dtype_must_be_floating(dtype):
    with pytest.raises(TypeError, match="accumulator_dtype must be None or a floating-point"):
        optkit.accumulate_gradients(optkit.sgd(0.1), 2, accumulator_dtype=dtype)


def test_inner_must_be_a_transform():
    with pytest.raises(TypeError, match=r"accumulate_gradients: argument 0 .* without calling"):
        optkit.accumulate_gradients(optkit.adam, 2)


def test_bad_trees_and_states_are_named():
    tx = make_tx()
    params = make_params()
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"accumulate_gradients: .*missing from updates: 'b'"):
        tx.update({"w": params["w"]}, state, params)
    with pytest.raises(ValueError, match="leaf 'w' has shape \\(4, 3\\) in updates"):
        tx.update({"w": params["w"].T, "b": params["b"]}, state, params)
    with pytest.raises(TypeError, match="must be an AccumulateGradientsState, got tuple"):
        tx.update(params, tuple(state), params)
