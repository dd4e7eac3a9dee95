"""optkit as the ``tx`` of Flax: linen's ``TrainState`` and ``nnx.Optimizer``, training real MLPs.

Every optimizer trains a small MLP on a generated 3-class problem (full batch, fixed seeds) under
``jax.jit`` / ``nnx.jit``; param groups select linen and nnx paths; ``value=`` reaches
``reduce_lr_on_plateau`` through ``nnx.Optimizer.update``, and LBFGS's ``value_fn=`` too (linen's
``TrainState.apply_gradients`` passes ``tx.update`` no extra arguments, so its step calls
``tx.update`` itself, as a user would); ``optkit.adamw`` follows
``optax.adamw``'s curve. Arrays are float32 explicitly (the session enables x64).

The table's runs train together: one jitted program per framework steps every run (they share
nothing, so each trains as it would alone), which compiles once instead of once per row and
keeps this module fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import optkit
from tests.integration.compile_counter import count_compiles
from tests.support.registry import REGISTRY

IN_FEATURES, HIDDEN, CLASSES, EXAMPLES = 8, 32, 3, 256
STEPS = 60


def make_data() -> tuple[jax.Array, jax.Array]:
    """Labels from a random linear teacher: learnable, and chance-level loss is ln(3) ~ 1.1."""
    x_key, teacher_key = jax.random.split(jax.random.key(0))
    x = jax.random.normal(x_key, (EXAMPLES, IN_FEATURES), jnp.float32)
    teacher = jax.random.normal(teacher_key, (IN_FEATURES, CLASSES), jnp.float32)
    return x, jnp.argmax(x @ teacher, axis=-1)


X, Y = make_data()


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# One row per optimizer set-up; each trains both frameworks. Selectors that name layers differ
# between linen and nnx, so the table only uses ones valid in both ("**/bias", "**/kernel").
OPTIMIZERS: dict[str, Callable[[], optkit.GradientTransformation]] = {
    # Every registry row in its typical set-up (every state buffer on) ...
    **{info.name: info.make for info in REGISTRY},
    # ... plain SGD, Nesterov, and the combinators.
    "sgd_plain": lambda: optkit.sgd(learning_rate=0.5),
    "adamw_as_optax": lambda: optkit.adamw(learning_rate=1e-2, weight_decay=1e-2),
    "sgd_nesterov": lambda: optkit.sgd(
        learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    ),
    "param_groups": lambda: optkit.param_groups(
        optkit.sgd,
        [{"params": "**/kernel"}, {"params": "**/bias", "weight_decay": 0.0}],
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=1e-3,
    ),
    "inject_hyperparams": lambda: optkit.inject_hyperparams(optkit.adamw)(
        learning_rate=1e-2, weight_decay=1e-2
    ),
    "param_groups_injected": lambda: optkit.param_groups(
        optkit.inject_hyperparams(optkit.adam),
        [{"params": "**/kernel"}, {"params": "**/bias", "learning_rate": 5e-3}],
        learning_rate=1e-2,
    ),
}


UpdateArgs = Callable[[Callable[[Any], jax.Array]], dict[str, Any]]
"""Maps the loss as a function of the params to the extra arguments of ``tx.update``."""


def no_update_args(loss_fn: Callable[[Any], jax.Array]) -> dict[str, Any]:
    return {}


# The extra update arguments of each row (LBFGS: the loss function).
UPDATE_ARGS: dict[str, UpdateArgs] = {info.name: info.update_args for info in REGISTRY}


def assert_learned(losses: list[float]) -> None:
    # The first loss is ~1.4; every set-up above ends between 0.003 and 0.15 after 60 full-batch
    # steps, so a fifth of the first loss is a clear "it trained" with margin.
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def optax_adamw() -> optax.GradientTransformation:
    # The same set-up as the "adamw_as_optax" row. weight_decay is explicit on both sides: optkit
    # follows torch's default (1e-2), optax defaults to 1e-4.
    return optax.adamw(learning_rate=1e-2, weight_decay=1e-2)


def frozen_groups(frozen: str, trained: str) -> optkit.GradientTransformation:
    """Adam with a learning_rate=0 group: its leaves must come out bit-for-bit unchanged."""
    return optkit.param_groups(
        optkit.adam,
        [{"params": frozen, "learning_rate": 0.0}, {"params": trained}],
        learning_rate=3e-2,
    )


# --- linen + TrainState ---------------------------------------------------------------------


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(CLASSES)(nn.relu(nn.Dense(HIDDEN)(x)))


def create_state(tx: optkit.GradientTransformation) -> train_state.TrainState:
    """The whole variables dict is the params, so leaf paths read ``params/Dense_0/kernel``."""
    model = LinenMLP()
    variables = model.init(jax.random.key(1), X[:1])
    return train_state.TrainState.create(apply_fn=model.apply, params=variables, tx=tx)


def linen_train_step(
    state: train_state.TrainState,
    x: jax.Array,
    y: jax.Array,
    update_args: UpdateArgs = no_update_args,
):
    def loss_fn(params):
        return cross_entropy(state.apply_fn(params, x), y)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    extra = update_args(loss_fn)
    if not extra:
        return state.apply_gradients(grads=grads), loss
    # apply_gradients calls tx.update without extra arguments: the same step, by hand.
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss, **extra)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


linen_step = jax.jit(linen_train_step)


@jax.jit
def linen_step_all(states: dict, x: jax.Array, y: jax.Array) -> dict:
    return {
        name: linen_train_step(state, x, y, UPDATE_ARGS.get(name, no_update_args))
        for name, state in states.items()
    }


def train_linen(
    state: train_state.TrainState, steps: int = STEPS
) -> tuple[train_state.TrainState, list[float]]:
    losses = []
    for _ in range(steps):
        state, loss = linen_step(state, X, Y)
        losses.append(float(loss))
    return state, losses


LINEN_RUNS = {
    **OPTIMIZERS,
    "optax_adamw": optax_adamw,
    "frozen_dense_0": lambda: frozen_groups("params/Dense_0/**", "params/Dense_1/**"),
}


@pytest.fixture(scope="module")
def linen_runs() -> dict[str, dict]:
    """Every LINEN_RUNS entry trained for STEPS steps: start and end state, and the losses."""
    start = {name: create_state(factory()) for name, factory in LINEN_RUNS.items()}
    states, history = start, []
    for _ in range(STEPS):
        results = linen_step_all(states, X, Y)
        states = {name: state for name, (state, _) in results.items()}
        history.append({name: loss for name, (_, loss) in results.items()})
    return {
        name: {
            "start": start[name],
            "end": states[name],
            "losses": [float(losses[name]) for losses in history],
        }
        for name in LINEN_RUNS
    }


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_train_state_trains(linen_runs, name):
    run = linen_runs[name]

    assert_learned(run["losses"])
    assert int(run["end"].step) == STEPS


def test_train_state_param_group_with_zero_learning_rate_stays_fixed(linen_runs):
    run = linen_runs["frozen_dense_0"]
    start, end = run["start"].params["params"], run["end"].params["params"]

    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(end["Dense_0"][leaf], start["Dense_0"][leaf])
        assert not np.array_equal(end["Dense_1"][leaf], start["Dense_1"][leaf])
    assert run["losses"][-1] < 0.8 * run["losses"][0]  # only the head trains


def test_train_state_adamw_follows_optax_adamw(linen_runs):
    np.testing.assert_allclose(
        linen_runs["adamw_as_optax"]["losses"], linen_runs["optax_adamw"]["losses"], rtol=1e-6
    )


def test_train_state_set_hyperparams_takes_effect_without_recompiling():
    state = create_state(optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1, momentum=0.9))
    state, _ = train_linen(state, steps=2)
    frozen = state.replace(opt_state=optkit.set_hyperparams(state.opt_state, learning_rate=0.0))

    with count_compiles() as compiled:
        after, _ = train_linen(frozen, steps=2)

    jax.tree.map(np.testing.assert_array_equal, after.params, state.params)
    assert not compiled


# --- nnx.Optimizer --------------------------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(IN_FEATURES, HIDDEN, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(jax.nn.relu(self.l1(x)))


def nnx_loss(model: NnxMLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return cross_entropy(model(x), y)


def nnx_train_step(
    model: NnxMLP,
    optimizer: nnx.Optimizer,
    x: jax.Array,
    y: jax.Array,
    update_args: UpdateArgs = no_update_args,
) -> jax.Array:
    loss, grads = nnx.value_and_grad(nnx_loss)(model, x, y)
    # The loss as a function of the params nnx.Optimizer passes tx.update (an nnx.State).
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    extra = update_args(lambda params: nnx_loss(nnx.merge(graphdef, params, rest), x, y))
    optimizer.update(model, grads, **extra)
    return loss


nnx_step = nnx.jit(nnx_train_step)


@nnx.jit
def nnx_step_all(runs: dict, x: jax.Array, y: jax.Array) -> dict:
    return {
        name: nnx_train_step(model, optimizer, x, y, UPDATE_ARGS.get(name, no_update_args))
        for name, (model, optimizer) in runs.items()
    }


@nnx.jit
def nnx_step_with_value(
    model: NnxMLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    loss, grads = nnx.value_and_grad(nnx_loss)(model, x, y)
    optimizer.update(model, grads, value=loss)
    return loss


def make_nnx(tx: optkit.GradientTransformation) -> tuple[NnxMLP, nnx.Optimizer]:
    model = NnxMLP(nnx.Rngs(1))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def train_nnx(model, optimizer, steps: int = STEPS, step=nnx_step) -> list[float]:
    return [float(step(model, optimizer, X, Y)) for _ in range(steps)]


def params_of(model: NnxMLP) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


NNX_RUNS = {
    **OPTIMIZERS,
    "optax_adamw": optax_adamw,
    "frozen_l1": lambda: frozen_groups("l1/**", "l2/**"),
    "frozen_biases": lambda: frozen_groups("**/bias", "**/kernel"),
}


@pytest.fixture(scope="module")
def nnx_runs() -> dict[str, dict]:
    """Every NNX_RUNS entry trained for STEPS steps: the optimizer, params before and after, and
    the losses."""
    runs = {name: make_nnx(factory()) for name, factory in NNX_RUNS.items()}
    start = {name: params_of(model) for name, (model, _) in runs.items()}
    history = [nnx_step_all(runs, X, Y) for _ in range(STEPS)]
    return {
        name: {
            "optimizer": optimizer,
            "start": start[name],
            "end": params_of(model),
            "losses": [float(losses[name]) for losses in history],
        }
        for name, (model, optimizer) in runs.items()
    }


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_nnx_optimizer_trains(nnx_runs, name):
    run = nnx_runs[name]

    assert_learned(run["losses"])
    assert int(run["optimizer"].step[...]) == STEPS


@pytest.mark.parametrize(
    ("run", "frozen"),
    [
        ("frozen_l1", {("l1", "kernel"), ("l1", "bias")}),
        ("frozen_biases", {("l1", "bias"), ("l2", "bias")}),
    ],
)
def test_nnx_param_group_with_zero_learning_rate_stays_fixed(nnx_runs, run, frozen):
    start, end, losses = (nnx_runs[run][key] for key in ("start", "end", "losses"))

    for layer in ("l1", "l2"):
        for leaf in ("kernel", "bias"):
            if (layer, leaf) in frozen:
                np.testing.assert_array_equal(end[layer][leaf], start[layer][leaf])
            else:
                assert not np.array_equal(end[layer][leaf], start[layer][leaf]), (layer, leaf)
    assert losses[-1] < 0.8 * losses[0]


def test_nnx_adamw_follows_optax_adamw(nnx_runs):
    np.testing.assert_allclose(
        nnx_runs["adamw_as_optax"]["losses"], nnx_runs["optax_adamw"]["losses"], rtol=1e-6
    )


def plateau_state(optimizer: nnx.Optimizer) -> optkit.ReduceLROnPlateauState:
    """The plateau transform's state (second in the chain), as plain arrays."""
    return nnx.as_pure(optimizer.opt_state)[1]


def test_nnx_update_forwards_value_to_reduce_lr_on_plateau():
    tx = optkit.chain(
        optkit.sgd(learning_rate=0.5),
        optkit.reduce_lr_on_plateau(patience=3, factor=0.5, threshold=0.0, learning_rate=0.5),
    )
    model, optimizer = make_nnx(tx)
    losses = train_nnx(model, optimizer, step=nnx_step_with_value)

    assert_learned(losses)
    # threshold=0: every strictly lower value becomes the best, so best is the lowest loss seen.
    state = plateau_state(optimizer)
    np.testing.assert_allclose(float(state.best), min(losses), rtol=1e-6)


def test_nnx_reduce_lr_on_plateau_reduces_on_a_flat_value():
    tx = optkit.chain(
        optkit.sgd(learning_rate=0.5),
        optkit.reduce_lr_on_plateau(patience=3, factor=0.5, learning_rate=0.5),
    )
    model, optimizer = make_nnx(tx)

    @nnx.jit
    def flat_step(model, optimizer):
        grads = nnx.grad(nnx_loss)(model, X, Y)
        optimizer.update(model, grads, value=jnp.float32(1.0))

    for _ in range(9):
        flat_step(model, optimizer)

    # Update 1 sets best=1; updates 2-5 are bad and the 5th reduces; 6-9 reduce again.
    np.testing.assert_allclose(float(plateau_state(optimizer).scale), 0.25)


def test_nnx_step_plateau_once_per_epoch():
    """Updates without ``value=`` leave the plateau alone; step_plateau on the nnx optimizer's
    state (its arrays wrapped in nnx variables) advances it, as torch's scheduler.step(loss)."""
    tx = optkit.chain(
        optkit.sgd(learning_rate=0.5),
        optkit.reduce_lr_on_plateau(patience=1, factor=0.5, learning_rate=0.5),
    )
    model, optimizer = make_nnx(tx)
    for _ in range(3):  # epochs with a flat validation loss
        before = plateau_state(optimizer)
        train_nnx(model, optimizer, steps=2)
        jax.tree.map(np.testing.assert_array_equal, plateau_state(optimizer), before)
        optimizer.opt_state = optkit.step_plateau(optimizer.opt_state, jnp.float32(1.0))

    # Epoch 1 sets best=1; epoch 2 is bad; epoch 3 is the second bad one and halves the lr.
    state = plateau_state(optimizer)
    assert (float(state.scale), float(state.best), int(state.num_bad_epochs)) == (0.5, 1.0, 0)
    losses = train_nnx(model, optimizer, steps=10)  # the state still trains the model
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_nnx_set_hyperparams_takes_effect_without_recompiling():
    model, optimizer = make_nnx(
        optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1, momentum=0.9)
    )
    train_nnx(model, optimizer, steps=2)
    optimizer.opt_state = optkit.set_hyperparams(optimizer.opt_state, learning_rate=0.0)
    before = params_of(model)

    with count_compiles() as compiled:
        train_nnx(model, optimizer, steps=2)

    jax.tree.map(np.testing.assert_array_equal, params_of(model), before)
    assert float(optkit.get_hyperparams(nnx.as_pure(optimizer.opt_state))["learning_rate"]) == 0
    # Fails while set_hyperparams drops the OptArray wrapper (see the next test): the state's
    # tree structure changes, so nnx.jit traces and compiles the step again.
    assert not compiled, f"{len(compiled)} compilation(s) after set_hyperparams"


def test_nnx_set_hyperparams_keeps_the_opt_state_variables():
    # nnx.Optimizer wraps every state array in an OptArray variable. set_hyperparams must keep
    # the wrapper: a bare array changes the state's tree structure, so the next nnx.jit step
    # recompiles (the point of injected hyperparameters is that it does not), and the value
    # drops out of nnx.state(optimizer, nnx.OptState), the filter used to checkpoint it.
    _, optimizer = make_nnx(optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1, momentum=0.9))
    structure = jax.tree.structure(optimizer.opt_state)
    filtered = len(jax.tree.leaves(nnx.state(optimizer, nnx.OptState)))

    optimizer.opt_state = optkit.set_hyperparams(optimizer.opt_state, learning_rate=0.05)

    kept = len(jax.tree.leaves(nnx.state(optimizer, nnx.OptState)))
    assert kept == filtered, f"{filtered - kept} state leaves lost their OptArray wrapper"
    assert jax.tree.structure(optimizer.opt_state) == structure
