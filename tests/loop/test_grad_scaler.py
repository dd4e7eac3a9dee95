"""grad_scaler reproduces torch.amp.GradScaler around a torch optimizer, step by step.

One table (tests/loop/grad_scaler_cases.py) drives the parity runs: each runs once, jitted, in a
module-scoped fixture; the golden tests compare with torch's trajectories stored in
tests/loop/golden/ and run without torch, the live tests run torch itself. The scale is compared
bit for bit, the params to 1e-10 (float64) or 1e-5 (float32) relative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optkit
from tests.loop import grad_scaler_oracle as oracle
from tests.loop.generate_grad_scaler_golden import Golden, load_golden
from tests.loop.grad_scaler_cases import (
    CASES,
    RTOL,
    START,
    STEPS,
    ScalerCase,
    bitwise_equal,
    gradient,
)
from tests.support.torch_buffers import find_state

IDS = [case.id for case in CASES]
by_case = pytest.mark.parametrize("case", CASES, ids=IDS)


def jitted_step(tx: optkit.GradientTransformation):
    """One training step: differentiate ``sum(p * g) * loss_scale(state)``, update, apply."""

    @jax.jit
    def step(params, state, fixed_grads):
        def scaled_loss(p):
            loss = sum(jnp.sum(p[name] * fixed_grads[name]) for name in p)
            return loss * optkit.loss_scale(state)

        updates, state = tx.update(jax.grad(scaled_loss)(params), state, params)
        return optkit.apply_updates(params, updates), state

    return step


class Run(NamedTuple):
    trajectory: oracle.Trajectory
    changed_on_skip: list[str]  # "step k: what changed" for every violation
    compiles: int
    final_state: Any


def optkit_run(case: ScalerCase) -> Run:
    tx = case.make_tx()
    params = {name: jnp.asarray(value, case.dtype) for name, value in START.items()}
    state = jax.jit(tx.init)(params)
    step = jitted_step(tx)
    scales, skipped, trajectory, changed = [], [], [], []
    for t in range(STEPS):
        grads = gradient({k: np.asarray(v) for k, v in params.items()}, t)
        new_params, new_state = step(params, state, grads)
        old, new = (
            find_state(state, optkit.GradScalerState),
            find_state(new_state, optkit.GradScalerState),
        )
        if new.skipped_steps > old.skipped_steps:
            if not bitwise_equal(new_params, params):
                changed.append(f"step {t}: params")
            if not bitwise_equal(new.inner_state, old.inner_state):
                changed.append(f"step {t}: inner state")
        params, state = new_params, new_state
        scales.append(float(new.scale))
        skipped.append(int(new.skipped_steps))
        trajectory.append(np.concatenate([np.ravel(params[k]) for k in START]))
    run = oracle.Trajectory(np.asarray(scales), np.asarray(skipped), np.stack(trajectory))
    return Run(run, changed, step._cache_size(), state)


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {case.id: optkit_run(case) for case in CASES}


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


def assert_matches(case: ScalerCase, ours: oracle.Trajectory, torch_run: oracle.Trajectory):
    np.testing.assert_array_equal(ours.scales, torch_run.scales, err_msg="scale trajectory")
    np.testing.assert_array_equal(ours.skipped, torch_run.skipped, err_msg="skipped steps")
    np.testing.assert_allclose(ours.params, torch_run.params, rtol=RTOL[case.dtype], atol=0)


# --- parity -------------------------------------------------------------------------------------


def test_golden_file_matches_the_case_table(golden):
    assert sorted(golden.specs) == sorted(IDS), "regenerate: generate_grad_scaler_golden.py"
    stale = [case.id for case in CASES if golden.specs[case.id] != case.torch_spec()]
    assert not stale, f"stale golden values for {stale}: run generate_grad_scaler_golden.py"


@by_case
def test_matches_torch_golden(case, runs, golden):
    expected = oracle.Trajectory(
        golden.scales[case.id], golden.skipped[case.id], golden.params[case.id]
    )
    assert_matches(case, runs[case.id].trajectory, expected)


@pytest.mark.torch
@by_case
def test_matches_live_torch(case, runs):
    assert_matches(case, runs[case.id].trajectory, oracle.torch_run(case))


def test_the_cases_skip_in_a_row_and_grow_several_times(golden):
    """The table exercises what it should: consecutive skips, several growths, natural
    overflow, and factors of both kinds."""
    scales = golden.scales["sgd_momentum"]
    assert np.sum(scales[1:] > scales[:-1]) >= 4
    assert golden.skipped["sgd_momentum"][-1] == 6
    assert golden.skipped["adamw_float32_overflow"][-1] > 6  # overflows of scale * g


@by_case
def test_skipped_steps_change_no_param_and_no_inner_buffer(case, runs):
    assert runs[case.id].changed_on_skip == []


@by_case
def test_each_case_compiles_its_step_once(case, runs):
    assert runs[case.id].compiles == 1


def test_schedule_inside_counts_only_steps_taken(runs):
    """Inside the scaler, the schedule's count is the optimizer's step count (skips excluded);
    outside (the plain torch loop), it counts every iteration."""
    inside = runs["adamw_schedule_inside"].final_state
    assert int(find_state(inside, optkit.InjectHyperparamsState).count) == STEPS - 6
    outside = runs["adamw_schedule_outside"].final_state
    assert int(find_state(outside, optkit.InjectHyperparamsState).count) == STEPS


# --- composition, jit, checkpoints --------------------------------------------------------------


def test_orbax_round_trip_resumes_bit_for_bit(runs, tmp_path: Path):
    case = next(c for c in CASES if c.id == "adamw_schedule_inside")
    tx = case.make_tx()
    state = runs[case.id].final_state
    params = {name: jnp.asarray(value) for name, value in START.items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    target = jax.eval_shape(tx.init, params)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "state", target)
    assert bitwise_equal(restored, state)
    assert isinstance(restored, optkit.GradScalerState)
    step = jitted_step(tx)
    for t in (2, 3):  # an inf step and a finite one
        grads = gradient(START, t)
        a, b = step(params, state, grads), step(params, restored, grads)
        assert bitwise_equal(a, b)


def test_loss_scale_is_found_in_any_nested_state():
    params = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    scaler = optkit.grad_scaler(optkit.sgd(0.1), init_scale=8.0)

    class WrapperState(NamedTuple):  # as accumulate_gradients or weight_averaging keep theirs
        count: jax.Array
        inner_state: Any

    single_group = optkit.param_groups(
        lambda **kw: optkit.grad_scaler(optkit.sgd(**kw), init_scale=8.0),
        [{"params": "**"}],
        learning_rate=0.1,
    )
    injected = optkit.inject_hyperparams(
        lambda learning_rate: optkit.grad_scaler(optkit.sgd(learning_rate), init_scale=8.0)
    )(learning_rate=0.1)
    states = {
        "root": scaler.init(params),
        "chain": optkit.chain(optkit.clip(1.0), scaler).init(params),
        "param_groups": single_group.init(params),
        "inject_hyperparams": injected.init(params),
        "flatten": optkit.flatten(scaler).init(params),
        "wrapper": WrapperState(
            jnp.zeros([], jnp.int32), (optkit.EmptyState(), scaler.init(params))
        ),
    }
    for where, state in states.items():
        assert float(optkit.loss_scale(state)) == 8.0, where


def test_loss_scale_errors_for_none_or_several():
    params = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match=r"holds none; wrap the optimizer in optkit\.grad_scaler"):
        optkit.loss_scale(optkit.sgd(0.1).init(params))
    two_groups = optkit.param_groups(
        lambda **kw: optkit.grad_scaler(optkit.sgd(**kw)),
        [{"params": "w"}, {"params": "b"}],
        learning_rate=0.1,
    )
    nested = optkit.grad_scaler(optkit.grad_scaler(optkit.sgd(0.1)))
    for tx in (two_groups, nested):
        with pytest.raises(ValueError, match="it holds 2; use one grad_scaler"):
            optkit.loss_scale(tx.init(params))


def test_optax_inner_and_extra_arguments():
    """An optax optimizer is run without extra arguments; an optkit one receives them."""
    params = jnp.ones(2)
    tx = optkit.grad_scaler(optax.adam(0.1), init_scale=4.0)
    update = jax.jit(tx.update)
    state = tx.init(params)
    _, state = update(jnp.array([4.0, jnp.nan]), state, params, value=1.0)
    assert int(state.inner_state[0].count) == 0
    updates, state = update(jnp.array([4.0, 4.0]), state, params, value=1.0)
    assert int(state.inner_state[0].count) == 1
    np.testing.assert_allclose(updates, [-0.1, -0.1], rtol=1e-6)

    seen = {}

    def record(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    recorder = optkit.GradientTransformation(lambda p: optkit.EmptyState(), record)
    optkit.grad_scaler(recorder).update(
        jnp.ones(2), optkit.grad_scaler(recorder).init(params), value=3.0
    )
    assert seen == {"value": 3.0}


def test_inside_flatten_gives_the_same_steps():
    """The advice for many small leaves: flatten(grad_scaler(...)) skips and steps the same."""
    params = {"w": jnp.ones(3), "b": jnp.full(2, -0.5)}
    per_leaf = optkit.grad_scaler(optkit.adam(0.1), init_scale=8.0, growth_interval=1)
    flat = optkit.flatten(per_leaf)
    states = [per_leaf.init(params), flat.init(params)]
    for grads in ({"w": jnp.array([1.0, jnp.inf, 2.0]), "b": jnp.ones(2)}, params, params):
        (a, states[0]), (b, states[1]) = (
            per_leaf.update(grads, states[0], params),
            flat.update(grads, states[1], params),
        )
        for name in params:  # compiled kernels of other lengths may round the last bit apart
            np.testing.assert_allclose(a[name], b[name], rtol=1e-14)
        assert optkit.loss_scale(states[0]) == optkit.loss_scale(states[1])


def test_zero_updates_of_a_skipped_step_keep_every_param_bit():
    """The skip returns -0.0, so a param at -0.0 stays -0.0 (``-0.0 + 0.0`` would be +0.0)."""
    tx = optkit.grad_scaler(optkit.sgd(0.1))
    params = jnp.array([-0.0, 1.0])
    updates, _ = tx.update(jnp.array([jnp.nan, 1.0]), tx.init(params), params)
    assert bitwise_equal(optkit.apply_updates(params, updates), params)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_scale": 0.0}, r"init_scale must be in \(0.0, 3.40"),
        ({"init_scale": -1.0}, r"init_scale must be in \(0.0"),
        ({"init_scale": float("inf")}, r"init_scale must be in"),
        ({"init_scale": 1e39}, r"init_scale must be in"),
        ({"init_scale": float("nan")}, r"init_scale must be in .* got NaN"),
        ({"growth_factor": 1.0}, r"growth_factor must be in \(1.0"),
        ({"growth_factor": 0.5}, r"growth_factor must be in \(1.0"),
        ({"growth_factor": float("inf")}, r"growth_factor must be in"),
        ({"backoff_factor": 1.0}, r"backoff_factor must be in \(0.0, 1.0\)"),
        ({"backoff_factor": 0.0}, r"backoff_factor must be in \(0.0, 1.0\)"),
        ({"backoff_factor": 1.5}, r"backoff_factor must be in \(0.0, 1.0\)"),
        ({"growth_interval": 0}, r"growth_interval must be an integer in \[1, 2147483647\]"),
        ({"growth_interval": 2.0}, r"growth_interval must be an integer"),
        ({"growth_interval": True}, r"growth_interval must be an integer"),
        ({"growth_interval": 2**31}, r"growth_interval must be an integer"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optkit.grad_scaler(optkit.sgd(0.1), **kwargs)


def test_inner_must_be_a_transform_and_float16_gradients_are_refused():
    with pytest.raises(TypeError, match="grad_scaler: argument 0 is 'function'"):
        optkit.grad_scaler(optkit.adam)
    tx = optkit.grad_scaler(optkit.sgd(0.1))
    params = {"w": jnp.ones(2, jnp.float16)}
    with pytest.raises(TypeError, match="the gradients of 'w' are float16"):
        tx.update(params, tx.init(params), params)


def test_bad_trees_name_the_leaf():
    tx = optkit.grad_scaler(optkit.adam(0.1))
    state = tx.init({"w": jnp.ones(2), "b": jnp.ones(1)})
    with pytest.raises(ValueError, match="'b'"):
        tx.update({"w": jnp.ones(2)}, state)
