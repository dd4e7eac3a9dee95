"""Checkpointing with orbax: exact state round trips, bitwise resumes, Flax ``TrainState``.

docs/checkpointing.md runs as written, pickle forbidden, in tests/docs/test_code_blocks.py (its
blocks in order as one script, at JAX's default precision as a user runs them, printing what the
page shows). The tests below use the functions the page defines: ``save_checkpoint`` and
``restore_checkpoint`` under the suite's float64 setting, and the page's Flax ``TrainState`` at
its own precision.

Nothing may go through pickle: the checks replace ``pickle``'s entry points with ones that fail,
and look for pickle files in every checkpoint directory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

import optkit
from optkit import schedules
from tests.docs.pages import cached_run, no_pickle
from tests.support.registry import REGISTRY

# --- helpers ------------------------------------------------------------------------------------


def assert_no_pickle_files(directory: Path) -> None:
    files = [path for path in directory.rglob("*") if path.is_file()]
    assert files, f"nothing was written under {directory}"
    assert not [path for path in files if path.suffix in {".pkl", ".pickle"}]


def assert_bitwise_equal(actual: Any, expected: Any) -> None:
    """Same tree structure (NamedTuple classes, dict keys, None and MaskedNode placeholders),
    and leaf by leaf the same array type, dtype, shape and bytes."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    pairs = zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True)
    for (path, got), want in pairs:
        where = jax.tree_util.keystr(path)
        assert isinstance(got, jax.Array), f"{where} is a {type(got).__name__}"
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), where


def counts(state: Any) -> list[jax.Array]:
    """Every ``count`` field in a state."""
    return [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        if getattr(path[-1], "name", None) == "count"
    ]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The page's namespace after its last block, and its working directory under
    ``"__workdir__"``."""
    run = cached_run("docs/checkpointing.md")
    return {**run.blocks[-1].namespace, "__workdir__": run.workdir}


# --- the page -----------------------------------------------------------------------------------


def test_doc_checkpoints_are_written_without_pickle(doc):
    checkpoints = doc["__workdir__"] / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        "groups",
        "resumed",
        "straight",
        "train_state",
    ]
    # The manager saved every 5 steps and kept the latest 2.
    for run in ("straight", "resumed"):
        steps = [int(path.name) for path in (checkpoints / run).iterdir() if path.name.isdigit()]
        assert sorted(steps) == [15, 20]
    assert_no_pickle_files(checkpoints)


# --- round trips of every kind of state ---------------------------------------------------------


def normal(seed: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    # NumPy, not jax.random: compiling a random sampler per shape would cost seconds.
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def committed(tree: Any) -> Any:
    """``tree`` placed on the device as restored arrays are, so both share one compiled update."""
    return jax.device_put(tree, jax.devices()[0])


@functools.cache
def make_params() -> dict[str, dict[str, jax.Array]]:
    """Nested dict params with float32, bfloat16 and float64 leaves."""
    return committed(
        {
            "encoder": {"w": normal(0, (3, 4)), "b": normal(1, (4,), jnp.bfloat16)},
            "head": {"w": normal(2, (4, 2), np.float64), "b": normal(3, (2,))},
        }
    )


@functools.cache
def gradients(step: int) -> dict[str, dict[str, jax.Array]]:
    leaves, treedef = jax.tree.flatten(make_params())
    grads = [normal(100 * step + i, p.shape, p.dtype) for i, p in enumerate(leaves)]
    return jax.tree.unflatten(treedef, [jnp.asarray(g) for g in grads])


def advance(update: Callable, params: Any, state: Any, steps: range) -> Any:
    """Apply a jitted ``make_update`` for some steps."""
    for step in steps:
        state = update(gradients(step), state, params)
    return state


def sum_of_squares(params: Any) -> jax.Array:
    """A loss of the mixed-dtype params, for optimizers that evaluate one (LBFGS)."""
    return sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(params))


def make_update(tx: optkit.GradientTransformation, extra: dict[str, Any] | None = None) -> Callable:
    """The jitted state update of ``tx``; the monitored value stays at 1.0 (a plateau).
    ``extra``: more arguments of ``tx.update``."""
    extra = extra or {}
    return jax.jit(
        lambda grads, state, params: tx.update(grads, state, params, value=1.0, **extra)[1]
    )


UPDATES = 6


class StateCase(NamedTuple):
    id: str
    make_tx: Callable[[], optkit.GradientTransformation]
    prepare: Callable[[Any], Any] = lambda state: state
    """Applied after the updates: set_hyperparams and the like."""
    check: Callable[[Any], None] = lambda state: None
    """Asserts the saved state is in the condition the case is about."""
    update_args: Callable[[Callable[[Any], jax.Array]], dict[str, Any]] = lambda loss_fn: {}
    """The extra update arguments for a loss function (a registry row's ``update_args``)."""


def _check_schedule_count(state: Any) -> None:
    assert [int(c) for c in counts(state)] == [UPDATES, UPDATES]  # adam's and the schedule's


def _check_clip_state(state: Any) -> None:
    assert type(state[0]) is optkit.EmptyState


def _check_groups_masked(state: Any) -> None:
    # Each group's moments cover its own leaves; the other group's are MaskedNode placeholders.
    encoder_group, head_group = (group.inner_state[0] for group in state.groups)
    for moments, other in [(encoder_group.mu, "head"), (head_group.nu, "encoder")]:
        assert {type(leaf) for leaf in moments[other].values()} == {optkit.MaskedNode}


def _check_injected(state: Any) -> None:
    hyperparams = optkit.get_hyperparams(state)
    assert float(hyperparams["weight_decay"]) == 0.05
    assert float(hyperparams["b1"]) == 0.8
    assert set(state.scheduled) == {"learning_rate"}


def _check_groups_injected(state: Any) -> None:
    assert float(optkit.get_hyperparams(state, group=0)["learning_rate"]) == 0.1
    assert float(optkit.get_hyperparams(state, group=1)["learning_rate"]) == 0.01
    assert float(optkit.get_hyperparams(state, group=1)["momentum"]) == 0.5


def _check_plateau(state: Any) -> None:
    plateau = state[1]
    # Constant value 1.0: reductions at updates 3 and 6 (patience 1, one update of cooldown).
    assert float(plateau.scale) == 0.25
    assert (int(plateau.num_bad_epochs), int(plateau.cooldown_counter)) == (0, 1)
    assert float(plateau.best) == 1.0


STATE_CASES = [
    # Every registry row in its typical set-up (every state buffer on) ...
    *(StateCase(info.name, info.make, update_args=info.update_args) for info in REGISTRY),
    # ... and other set-ups and combinators.
    StateCase("sgd_nesterov", lambda: optkit.sgd(0.1, momentum=0.9, nesterov=True)),
    StateCase("adam_amsgrad", lambda: optkit.adam(1e-3, weight_decay=0.01, amsgrad=True)),
    StateCase(
        "adamw_cosine",
        lambda: optkit.adamw(schedules.cosine_annealing_lr(1e-2, T_max=10)),
        check=_check_schedule_count,
    ),
    StateCase(
        "clip_then_adamw",
        lambda: optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adamw(1e-3)),
        check=_check_clip_state,
    ),
    StateCase("adagrad_lr_decay", lambda: optkit.adagrad(0.1, lr_decay=0.01)),
    StateCase("rmsprop_centered", lambda: optkit.rmsprop(0.01, centered=True, momentum=0.9)),
    StateCase(
        "param_groups",
        lambda: optkit.param_groups(
            optkit.adamw,
            [{"params": "encoder/**", "learning_rate": 1e-2}, {"params": "head/**"}],
            learning_rate=1e-3,
        ),
        check=_check_groups_masked,
    ),
    StateCase(
        "inject_hyperparams",
        lambda: optkit.inject_hyperparams(optkit.adamw)(
            learning_rate=schedules.warmup_cosine_decay(0.0, 1e-2, 2, 10),
            weight_decay=0.1,
            b1=0.9,
        ),
        prepare=lambda state: optkit.set_hyperparams(state, weight_decay=0.05, b1=0.8),
        check=_check_injected,
    ),
    StateCase(
        "param_groups_injected",
        lambda: optkit.param_groups(
            optkit.inject_hyperparams(optkit.sgd),
            [{"params": "encoder/**"}, {"params": "head/**", "dampening": 0.1}],
            learning_rate=0.1,
            momentum=0.9,
        ),
        prepare=lambda state: optkit.set_hyperparams(
            state, group=1, learning_rate=0.01, momentum=0.5
        ),
        check=_check_groups_injected,
    ),
    StateCase(
        "reduce_lr_on_plateau",
        lambda: optkit.chain(
            optkit.rmsprop(0.01),
            optkit.reduce_lr_on_plateau(factor=0.5, patience=1, cooldown=1, learning_rate=0.01),
        ),
        check=_check_plateau,
    ),
    StateCase("training_loop", lambda: make_training_loop()),
    StateCase("masked", lambda: optkit.masked(optkit.adam(1e-3), {"encoder": True, "head": False})),
    StateCase(
        "partition",
        lambda: optkit.partition(
            {"fast": optkit.sgd(0.1, momentum=0.9), "slow": optkit.adagrad(0.01)},
            {"encoder": "fast", "head": "slow"},
        ),
    ),
]


def test_state_cases_cover_every_leaf_kind():
    dtypes = set()
    for case in STATE_CASES:
        abstract = jax.eval_shape(case.make_tx().init, make_params())
        dtypes |= {leaf.dtype for leaf in jax.tree.leaves(abstract)}
    assert {jnp.dtype(d) for d in ("int32", "bfloat16", "float32", "float64")} <= dtypes


@pytest.mark.parametrize("case", STATE_CASES, ids=lambda case: case.id)
def test_state_round_trip_is_exact(case, doc, tmp_path):
    tx = case.make_tx()
    update = make_update(tx, case.update_args(sum_of_squares))
    params = make_params()
    opt_state = case.prepare(advance(update, params, committed(tx.init(params)), range(UPDATES)))
    case.check(opt_state)
    assert all(c.dtype == jnp.int32 and int(c) > 0 for c in counts(opt_state))

    with no_pickle():
        doc["save_checkpoint"](tmp_path / "checkpoint", params, opt_state)
        fresh_tx = case.make_tx()
        restored_params, restored_state = doc["restore_checkpoint"](
            tmp_path / "checkpoint", fresh_tx, make_params()
        )

    assert_bitwise_equal(restored_params, params)
    assert_bitwise_equal(restored_state, opt_state)
    assert_no_pickle_files(tmp_path)
    # The restored state is a working state: the next updates are the saved state's, bit for bit.
    steps = range(UPDATES, UPDATES + 2)
    assert_bitwise_equal(
        advance(update, restored_params, restored_state, steps),
        advance(update, params, opt_state, steps),
    )


def test_restore_without_a_target_loses_the_state_types(doc, tmp_path):
    tx = optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adam(1e-3))
    params = make_params()
    doc["save_checkpoint"](tmp_path / "checkpoint", params, tx.init(params))

    with ocp.StandardCheckpointer() as checkpointer:
        untyped = checkpointer.restore(tmp_path / "checkpoint")["opt_state"]

    assert isinstance(untyped, list)
    assert untyped[0] is None  # was EmptyState()
    assert set(untyped[1][0]) == {"count", "mu", "nu", "nu_max"}  # was ScaleByAdamState
    with pytest.raises(ValueError, match="chain: state must be a tuple"):
        tx.update(gradients(0), untyped, params)


@pytest.mark.parametrize(
    "other",
    [
        lambda: optkit.adam(1e-3, amsgrad=True),
        lambda: optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adamw(1e-3)),
        lambda: optkit.sgd(0.1, momentum=0.9),
    ],
    ids=["amsgrad", "extra_clip", "sgd"],
)
def test_restoring_into_another_optimizer_fails(other, doc, tmp_path):
    tx = optkit.adamw(1e-3)
    params = make_params()
    doc["save_checkpoint"](tmp_path / "checkpoint", params, tx.init(params))

    with pytest.raises(ValueError, match=r"(?i)structure"):
        doc["restore_checkpoint"](tmp_path / "checkpoint", other(), params)


def test_restore_reads_arrays_in_the_target_dtype(doc, tmp_path):
    """Saved with float64 enabled, restored without: the target's dtype wins, as the page says."""
    tx = optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1)
    params = {"w": jnp.ones(3, jnp.float32)}
    doc["save_checkpoint"](tmp_path / "checkpoint", params, tx.init(params))

    with jax.enable_x64(False):
        _, restored = doc["restore_checkpoint"](tmp_path / "checkpoint", tx, params)

    learning_rate = optkit.get_hyperparams(restored)["learning_rate"]
    assert learning_rate.dtype == jnp.float32
    assert float(learning_rate) == float(np.float32(0.1))


def test_plain_hyperparameters_are_code_not_state(doc, tmp_path):
    """A learning rate given as a number is not in the state: another one restores fine."""
    params = make_params()
    opt_state = optkit.adam(1e-3).init(params)
    doc["save_checkpoint"](tmp_path / "checkpoint", params, opt_state)

    _, restored = doc["restore_checkpoint"](tmp_path / "checkpoint", optkit.adam(1e-4), params)

    assert_bitwise_equal(restored, opt_state)


# --- resuming a run -----------------------------------------------------------------------------

TOTAL_STEPS = 20
RESUME_AT = 10
XS = normal(4, (TOTAL_STEPS, 16, 3))
YS = np.sin(XS @ np.array([1.0, -2.0, 0.5], np.float32)) + 0.1 * normal(5, (TOTAL_STEPS, 16))


def mlp_loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["encoder"]["w"] + params["encoder"]["b"])
    return jnp.mean((hidden @ params["head"]["w"] + params["head"]["b"] - y) ** 2)


@functools.cache
def mlp_params() -> dict[str, dict[str, jax.Array]]:
    return {
        "encoder": {"w": jnp.asarray(0.5 * normal(6, (3, 8))), "b": jnp.zeros(8, jnp.bfloat16)},
        "head": {"w": jnp.asarray(0.5 * normal(7, (8,))), "b": jnp.zeros((), jnp.float32)},
    }


class ResumeCase(NamedTuple):
    id: str
    make_tx: Callable[[], optkit.GradientTransformation]
    changes: dict[int, Callable[[Any], Any]]
    """State edits (set_hyperparams) made before the step of each key, in every run."""
    check: Callable[[Any, Any], None]
    """Asserts on (state at the resume point, final state) that the case exercises its feature."""


def _check_schedule_counts(saved: Any, final: Any) -> None:
    assert int(saved[-1].count) == RESUME_AT
    assert int(final[-1].count) == TOTAL_STEPS


def _check_group_changes(saved: Any, final: Any) -> None:
    # Set before the resume point: restored from the checkpoint.
    assert float(optkit.get_hyperparams(saved, group=0)["learning_rate"]) == 0.02
    # Set after it, by each run.
    assert float(optkit.get_hyperparams(final, group=1)["momentum"]) == 0.9
    assert float(optkit.get_hyperparams(final, group=1)["learning_rate"]) == 0.01


def _check_reductions(saved: Any, final: Any) -> None:
    # Reductions happened before the checkpoint and after the restore.
    assert float(saved[1].scale) < 1.0
    assert float(final[1].scale) < float(saved[1].scale)


def make_training_loop() -> optkit.GradientTransformation:
    """Loss scaling, gradient accumulation over 3 micro-batches and an EMA, around AdamW."""
    scaled = optkit.grad_scaler(
        optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adamw(0.05)),
        init_scale=1.0,
        growth_interval=2,
    )
    accumulated = optkit.accumulate_gradients(scaled, every_k=3)
    return optkit.weight_averaging(accumulated, mode="ema", decay=0.9, start_step=2, every_k=3)


def _check_training_loop(saved: Any, final: Any) -> None:
    # The checkpoint falls in the middle of an accumulation cycle, with a grown loss scale and
    # an average under way.
    assert int(saved.inner_state.micro_step) == RESUME_AT % 3 == 1
    assert 1.0 < float(optkit.loss_scale(saved)) < float(optkit.loss_scale(final))
    assert 0 < int(saved.n_averaged) < int(final.n_averaged)


RESUME_CASES = [
    ResumeCase(
        "adamw_cosine",
        lambda: optkit.adamw(schedules.cosine_annealing_lr(0.05, T_max=TOTAL_STEPS)),
        {},
        _check_schedule_counts,
    ),
    ResumeCase(
        "sgd_momentum_groups_injected",
        lambda: optkit.param_groups(
            optkit.inject_hyperparams(optkit.sgd),
            [
                {"params": "encoder/**", "momentum": 0.9},
                {"params": "head/**", "learning_rate": 0.02, "dampening": 0.1},
            ],
            learning_rate=0.05,
            momentum=0.5,
        ),
        {
            4: lambda state: optkit.set_hyperparams(state, group=0, learning_rate=0.02),
            15: lambda state: optkit.set_hyperparams(
                state, group=1, learning_rate=0.01, momentum=0.9
            ),
        },
        _check_group_changes,
    ),
    ResumeCase(
        "rmsprop_plateau",
        lambda: optkit.chain(
            optkit.rmsprop(0.01, momentum=0.5),
            optkit.reduce_lr_on_plateau(factor=0.5, patience=1, threshold=0.2, learning_rate=0.01),
        ),
        {},
        _check_reductions,
    ),
    ResumeCase("training_loop", make_training_loop, {}, _check_training_loop),
]


def make_train_step(tx: optkit.GradientTransformation) -> Callable:
    """A newly jitted training step (each call compiles afresh, as a restarted program does)."""

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optkit.apply_updates(params, updates), opt_state, loss

    return train_step


def train(case: ResumeCase, train_step: Callable, params: Any, opt_state: Any, steps: range):
    """Run ``steps``, making the case's state changes on the way; return (params, state, losses)."""
    losses = []
    for step in steps:
        if step in case.changes:
            opt_state = case.changes[step](opt_state)
        params, opt_state, loss = train_step(params, opt_state, XS[step], YS[step])
        losses.append(loss)
    return params, opt_state, losses


@pytest.mark.parametrize("case", RESUME_CASES, ids=lambda case: case.id)
def test_resumed_run_is_bitwise_identical(case, doc, tmp_path):
    tx = case.make_tx()
    train_step = make_train_step(tx)
    params = mlp_params()
    straight = train(case, train_step, params, tx.init(params), range(TOTAL_STEPS))
    # The same program, interrupted at RESUME_AT.
    params, saved_state, first_losses = train(
        case, train_step, params, tx.init(params), range(RESUME_AT)
    )
    path = tmp_path / f"step_{RESUME_AT}"
    with no_pickle():
        doc["save_checkpoint"](path, params, saved_state)
        del tx, train_step, params
        # As after a restart: a new optimizer, a new jit, the params' shapes and dtypes only.
        tx = case.make_tx()
        train_step = make_train_step(tx)
        abstract_params = jax.tree.map(
            lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), mlp_params()
        )
        params, opt_state = doc["restore_checkpoint"](path, tx, abstract_params)
    resumed = train(case, train_step, params, opt_state, range(RESUME_AT, TOTAL_STEPS))

    assert_bitwise_equal((*resumed[:2], first_losses + resumed[2]), straight)
    assert_no_pickle_files(tmp_path)
    case.check(saved_state, resumed[1])
    # The control: the restored params with a fresh optimizer state do not reproduce the run.
    fresh_state = committed(tx.init(params))
    restarted = train(case, train_step, params, fresh_state, range(RESUME_AT, TOTAL_STEPS))
    differs = jax.tree.map(lambda a, b: not jnp.array_equal(a, b), restarted[0], straight[0])
    assert any(jax.tree.leaves(differs))


# --- Flax TrainState ----------------------------------------------------------------------------


def test_flax_train_state_round_trip(doc):
    """The page's TrainState, saved and restored into a TrainState.create(...) target."""
    create, train_step = doc["create_train_state"], doc["train_state_step"]
    xs, ys, saved = doc["xs"], doc["ys"], doc["state"]
    path = doc["__workdir__"] / "checkpoints" / "train_state"
    # The page runs at default precision; so does this test.
    with jax.enable_x64(False):
        targets = {"abstract": jax.eval_shape(create, jax.random.key(1))}
        targets["concrete"] = create(jax.random.key(1))
        with no_pickle(), ocp.StandardCheckpointer() as checkpointer:
            restored = {kind: checkpointer.restore(path, t) for kind, t in targets.items()}
        assert_bitwise_equal(doc["restored"].params, restored["abstract"].params)
        for kind, target in targets.items():
            state = restored[kind]
            assert type(state) is train_state.TrainState, kind
            assert state.tx is target.tx and state.apply_fn == target.apply_fn, kind
            assert int(state.step) == int(state.opt_state[0].count) == 5, kind
            assert_bitwise_equal((state.params, state.opt_state), (saved.params, saved.opt_state))

        resumed = restored["abstract"]
        for step in range(5, 10):
            saved = train_step(saved, xs[step], ys[step])
            resumed = train_step(resumed, xs[step], ys[step])

    assert int(resumed.step) == int(saved.step) == 10
    assert_bitwise_equal((resumed.params, resumed.opt_state), (saved.params, saved.opt_state))
