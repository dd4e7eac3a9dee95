"""weight_averaging's promises beyond torch parity: the inner optimizer is untouched, the average
follows its formula, and the wrapper jits, checkpoints and composes.

Expected values come from the bare optimizer's trajectory (the same transform without the
wrapper) and from the averaging formulas evaluated in numpy, never from the wrapper's own output.
torch parity is in test_weight_averaging_parity.py.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optkit
from tests.loop.averaging_cases import Averaging
from tests.parity import problem

STEPS = 12
TASK = problem.STANDARD
inject = optkit.inject_hyperparams


def start_params() -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in TASK.initial_params(np.float64).items()}


def assert_bitwise(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype and np.asarray(a).tobytes() == np.asarray(e).tobytes()


class Stepper:
    """One jitted ``(params, state, extra) -> (params, updates, state)`` per transform,
    counting its traces."""

    def __init__(self, tx: optkit.GradientTransformation) -> None:
        self.tx, self.traces = tx, 0

        def step(params, state, extra):
            self.traces += 1
            _, grads = jax.value_and_grad(TASK.jax_loss)(params)
            updates, state = tx.update(grads, state, params, **extra)
            return optkit.apply_updates(params, updates), updates, state

        self.jitted = jax.jit(step)

    def run(self, steps: int = STEPS, params=None, state=None, changes=None, **extra):
        """Params, updates and states after each update; ``changes[k]`` is applied with
        set_hyperparams before update k."""
        params = start_params() if params is None else params
        state = self.tx.init(params) if state is None else state
        path = []
        for k in range(steps):
            if changes and k in changes:
                state = optkit.set_hyperparams(state, **changes[k])
            params, updates, state = self.jitted(params, state, extra)
            path.append((params, updates, state))
        return path


def averaged_by_formula(path: list[dict[str, Any]], averaging: Averaging) -> list[Any]:
    """The average after each update, in numpy float64, from the params after each update."""
    average, n, out = None, 0, []
    for count, params in enumerate(path):
        params = {k: np.asarray(v) for k, v in params.items()}
        if averaging.due(count):
            if n == 0:
                average = params
            elif averaging.mode == "ema":
                weight = 1 - averaging.decay
                average = {k: average[k] + weight * (params[k] - average[k]) for k in params}
            else:
                average = {k: average[k] + (params[k] - average[k]) / (n + 1) for k in params}
            n += 1
        out.append(average)
    return out


def assert_close_trees(actual: Any, expected: Any, rtol: float) -> None:
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=rtol)


@functools.cache
def bare_sgd() -> list:
    return Stepper(optkit.sgd(0.05, momentum=0.9)).run()


SETUPS = [
    Averaging("ema", decay=0.9),
    Averaging("ema", decay=0.7, start_step=4, every_k=3),
    Averaging("ema", decay=0.0, start_step=1),
    Averaging("ema", decay=1.0, every_k=2),
    Averaging("swa"),
    Averaging("swa", start_step=2, every_k=2),
]


@functools.cache
def nested_sgd() -> tuple[list, int]:
    """Every set-up around one SGD, nested (``SETUPS[0]`` outermost), run by one jitted step;
    and how many times that step was traced."""
    tx = optkit.sgd(0.05, momentum=0.9)
    for averaging in reversed(SETUPS):
        tx = optkit.weight_averaging(tx, **averaging.kwargs())
    stepper = Stepper(tx)
    return stepper.run(), stepper.traces


@pytest.mark.parametrize("level", range(len(SETUPS)), ids=[a.id for a in SETUPS])
def test_average_follows_its_formula_and_the_inner_path_is_the_bare_one(level):
    averaging = SETUPS[level]
    path, traces = nested_sgd()
    bare = bare_sgd()
    expected = averaged_by_formula([params for params, _, _ in bare], averaging)
    # SWA's weight 1 / (n + 1) is rounded to float32, as torch's: the mean is exact to ~1e-8.
    rtol = 1e-12 if averaging.mode == "ema" else 1e-7
    initial = start_params()
    for count, ((params, updates, top), (bare_params, bare_updates, bare_state)) in enumerate(
        zip(path, bare, strict=True)
    ):
        states = [top]  # every set-up's state, then the optimizer's
        for _ in SETUPS:
            states.append(states[-1].inner_state)
        state = states[level]
        assert_bitwise((params, updates, states[-1]), (bare_params, bare_updates, bare_state))
        due = sum(averaging.due(c) for c in range(count + 1))
        assert (int(state.count), int(state.n_averaged)) == (count + 1, due)
        assert state.count.dtype == state.n_averaged.dtype == jnp.int32
        if due:
            assert_close_trees(state.averaged_params, expected[count], rtol)
        else:  # before the first averaging: the params given to init, as torch's deepcopy
            assert_bitwise(state.averaged_params, initial)
    assert traces == 1  # averaging and other updates share one compiled step


def test_jit_init_is_eager_init_and_holds_copies_a_donating_step_can_consume():
    tx = optkit.weight_averaging(optkit.adamw(1e-2), mode="swa", every_k=2)
    params = start_params()
    state = tx.init(params)
    assert_bitwise(jax.jit(tx.init)(params), state)
    copies = zip(jax.tree.leaves(state.averaged_params), jax.tree.leaves(params), strict=True)
    assert all(copy is not param for copy, param in copies)

    def step(params, state):
        _, grads = jax.value_and_grad(TASK.jax_loss)(params)
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    expected = (params, state)
    for _ in range(3):
        expected = jax.jit(step)(*expected)
    donating = jax.jit(step, donate_argnums=(0, 1))
    got = jax.tree.map(jnp.copy, (params, state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU may decline to reuse a donated buffer
        for _ in range(3):
            got = donating(*got)
    assert_bitwise(got, expected)


def test_orbax_round_trip_in_the_middle_of_a_run_resumes_bitwise(tmp_path: Path):
    tx = optkit.weight_averaging(optkit.nadam(1e-2), mode="ema", decay=0.9, start_step=2)
    stepper = Stepper(tx)
    params, _, state = stepper.run(5)[-1]
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path.absolute() / "ckpt", {"params": params, "state": state})
    target = jax.eval_shape(lambda p: {"params": p, "state": tx.init(p)}, start_params())
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path.absolute() / "ckpt", target)
    assert isinstance(restored["state"], optkit.WeightAveragingState)
    assert_bitwise(restored["state"], state)
    resumed = stepper.run(4, restored["params"], restored["state"])[-1]
    assert_bitwise(resumed, stepper.run(4, params, state)[-1])
    assert stepper.traces == 1


def test_around_inject_hyperparams_set_hyperparams_reaches_the_optimizer():
    changes = {5: {"learning_rate": 0.01}}
    injected = inject(optkit.sgd)(learning_rate=0.05, momentum=0.9)
    path = Stepper(optkit.weight_averaging(injected, mode="swa")).run(changes=changes)
    bare = Stepper(injected).run(changes=changes)
    expected = averaged_by_formula([p for p, _, _ in bare], Averaging("swa"))
    for (params, _, state), (bare_params, _, bare_state), average in zip(
        path, bare, expected, strict=True
    ):
        assert_bitwise((params, state.inner_state), (bare_params, bare_state))
        assert_close_trees(state.averaged_params, average, 1e-7)
    assert float(optkit.get_hyperparams(path[-1][2])["learning_rate"]) == 0.01


def test_around_param_groups():
    averaging = Averaging("ema", decay=0.8, start_step=1, every_k=2)
    changes = {3: {"momentum": 0.5}}
    grouped = optkit.param_groups(
        inject(optkit.sgd),
        [{"params": ["matrix", "tensor"], "learning_rate": 0.02}, {"params": ["scalar", "vector"]}],
        learning_rate=0.05,
        momentum=0.9,
    )
    path = Stepper(optkit.weight_averaging(grouped, **averaging.kwargs())).run(changes=changes)
    bare = Stepper(grouped).run(changes=changes)
    expected = averaged_by_formula([p for p, _, _ in bare], averaging)
    for (_, _, state), (_, _, bare_state), average in zip(path, bare, expected, strict=True):
        assert_bitwise(state.inner_state, bare_state)
        if average is not None:
            assert_close_trees(optkit.get_averaged_params(state), average, 1e-12)


def test_injected_decay_is_a_runtime_value():
    """``decay`` can itself be injected (mode, start_step and every_k stay static)."""
    factory = functools.partial(optkit.weight_averaging, optkit.sgd(0.05, momentum=0.9))
    tx = inject(factory)(mode="ema", decay=0.9, start_step=1)
    assert set(optkit.get_hyperparams(tx.init(start_params()))) == {"decay"}
    path = Stepper(tx).run(changes={6: {"decay": 0.5}})
    params = [p for p, _, _ in bare_sgd()]
    first = averaged_by_formula(params[:6], Averaging("ema", decay=0.9, start_step=1))
    rest = first[-1]
    for p in params[6:]:
        rest = {k: rest[k] + 0.5 * (np.asarray(v) - rest[k]) for k, v in p.items()}
    assert_close_trees(optkit.get_averaged_params(path[5][2]), first[-1], 1e-12)
    assert_close_trees(optkit.get_averaged_params(path[-1][2]), rest, 1e-12)


def test_extra_arguments_reach_inner_transforms_that_take_them():
    plateau = optkit.chain(
        optkit.sgd(1.0), optkit.reduce_lr_on_plateau(patience=0, learning_rate=1.0)
    )
    for inner, extra in ((plateau, {"value": jnp.asarray(1.0)}), (optax.sgd(0.1), {"value": 1.0})):
        tx = optkit.weight_averaging(inner)
        params = start_params()
        updates, _ = tx.update(params, tx.init(params), params, **extra)
        assert jax.tree.structure(updates) == jax.tree.structure(params)


class OtherWrapperState(NamedTuple):
    """A state shaped like the other training-loop wrappers': counters and ``inner_state``."""

    skipped: jax.Array
    inner_state: Any


def _states_holding_one(state: Any) -> dict[str, Any]:
    return {
        "chain": (optkit.EmptyState(), state),
        "masked": optkit.MaskedState(inner_state=state),
        "injected": optkit.InjectHyperparamsState(
            count=jnp.zeros([], jnp.int32), hyperparams={}, scheduled={}, inner_state=state
        ),
        "other_wrapper": OtherWrapperState(skipped=jnp.zeros([], jnp.int32), inner_state=state),
        "dict": {"optimizer": (state,)},
    }


def test_get_averaged_params_finds_the_state_anywhere():
    path = Stepper(optkit.weight_averaging(optkit.sgd(0.05, momentum=0.9), every_k=3)).run(4)
    state = path[-1][2]
    for name, holder in _states_holding_one(state).items():
        assert optkit.get_averaged_params(holder) is state.averaged_params, name


def test_get_averaged_params_refuses_none_or_several():
    params = start_params()
    with pytest.raises(ValueError, match="holds none; wrap the optimizer"):
        optkit.get_averaged_params(optkit.sgd(0.1).init(params))
    nested = optkit.weight_averaging(optkit.weight_averaging(optkit.sgd(0.1)), mode="swa")
    with pytest.raises(ValueError, match="it holds 2"):
        optkit.get_averaged_params(nested.init(params))
    per_group = optkit.param_groups(
        lambda **kw: optkit.weight_averaging(optkit.sgd(**kw)),
        [{"params": ["matrix", "tensor"]}, {"params": ["scalar", "vector"]}],
        learning_rate=0.1,
    )
    state = per_group.init(params)
    with pytest.raises(ValueError, match=r"it holds 2 .*state.groups\[i\]"):
        optkit.get_averaged_params(state)
    first = optkit.get_averaged_params(state.groups[0])
    assert isinstance(first["scalar"], optkit.MaskedNode)
    np.testing.assert_array_equal(first["matrix"], params["matrix"])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "EMA"}, ValueError, "mode must be one of 'ema', 'swa'"),
        ({"decay": -0.1}, ValueError, r"decay must be in \[0.0, 1.0\]"),
        ({"decay": 1.5}, ValueError, r"decay must be in \[0.0, 1.0\]"),
        ({"decay": math.nan}, ValueError, r"decay must be in \[0.0, 1.0\]"),
        ({"decay": "0.9"}, TypeError, "decay must be a number"),
        ({"start_step": -1}, ValueError, r"start_step must be an integer in \[0, inf\]"),
        ({"start_step": 1.5}, ValueError, "start_step must be an integer"),
        ({"start_step": True}, ValueError, "start_step must be an integer"),
        ({"every_k": 0}, ValueError, r"every_k must be an integer in \[1, inf\]"),
        ({"every_k": 2.0}, ValueError, "every_k must be an integer"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else "",
)
def test_bad_settings_are_rejected_with_their_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        optkit.weight_averaging(optkit.sgd(0.1), **kwargs)


def test_bad_inner_and_bad_trees_are_errors():
    with pytest.raises(TypeError, match="weight_averaging: argument 0 is 'function'"):
        optkit.weight_averaging(optkit.sgd)
    tx = optkit.weight_averaging(optkit.sgd(0.1))
    params = start_params()
    state = tx.init(params)
    with pytest.raises(ValueError, match="weight_averaging reads the params"):
        tx.update(params, state)
    other = {**params, "extra": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"weight_averaging: .*not in optimizer state: 'extra'"):
        tx.update(other, state, other)
    reshaped = {**params, "vector": jnp.zeros(5)}
    with pytest.raises(ValueError, match="leaf 'vector' has shape"):
        tx.update(params, state, reshaped)


def test_counts_beyond_int32_mean_never_or_once():
    never = optkit.weight_averaging(optkit.sgd(0.1), start_step=2**40)
    once = optkit.weight_averaging(optkit.sgd(0.1), every_k=2**40)
    params = start_params()
    for tx, expected in ((never, 0), (once, 1)):
        state = tx.init(params)
        update = jax.jit(tx.update)
        for _ in range(3):
            _, state = update(params, state, params)
        assert int(state.n_averaged) == expected
