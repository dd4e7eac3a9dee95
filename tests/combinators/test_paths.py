"""Leaf paths on real parameter trees, as param_groups selectors see them.

A selector ``(path, leaf) -> bool`` receives every leaf's path, so recording what it is called with
shows the spelling users write globs against: ``/``-joined dict keys, sequence indices and
dataclass attributes, with the ``value`` attribute of a Flax nnx ``Variable`` left out. The
expected paths are written by hand from each library's documented tree layout.

The end-to-end tests train a tiny Flax linen model through ``TrainState`` and a tiny nnx model
through ``nnx.Optimizer``, each with a learning_rate=0 group that must not move.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, struct
from flax.training import train_state

import optkit


def paths_seen(tree: Any) -> list[str]:
    """The paths a param_groups selector is called with when the optimizer is initialized."""
    seen = []

    def record(path: str, leaf: Any) -> bool:
        seen.append(path)
        return True

    optkit.param_groups(optkit.sgd, [{"params": record}], learning_rate=0.1).init(tree)
    return seen


# --- Flax linen -----------------------------------------------------------------------------------


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(jnp.tanh(nn.Dense(4)(x)))


def _linen_variables() -> dict:
    return LinenMLP().init(jax.random.key(0), jnp.ones((1, 3)))


def test_linen_variables_give_collection_module_and_parameter_segments():
    assert sorted(paths_seen(_linen_variables())) == [
        "params/Dense_0/bias",
        "params/Dense_0/kernel",
        "params/Dense_1/bias",
        "params/Dense_1/kernel",
    ]


def test_linen_frozen_dict_gives_the_same_paths():
    frozen = flax.core.freeze(_linen_variables())
    assert sorted(paths_seen(frozen)) == sorted(paths_seen(_linen_variables()))


# --- Flax nnx -------------------------------------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.l2 = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(jnp.tanh(self.l1(x)))


NNX_PATHS = ["l1/bias", "l1/kernel", "l2/bias", "l2/kernel"]

NNX_FORMS = {
    "state_of_variables": lambda model: nnx.state(model, nnx.Param),
    "split_state": lambda model: nnx.split(model)[1],
    "as_pure": lambda model: nnx.as_pure(nnx.state(model, nnx.Param)),
    "pure_dict": lambda model: nnx.to_pure_dict(nnx.state(model, nnx.Param)),
}


@pytest.mark.parametrize("form", list(NNX_FORMS.values()), ids=list(NNX_FORMS))
def test_nnx_state_paths_name_the_module_attributes_without_value(form):
    assert sorted(paths_seen(form(NnxMLP(nnx.Rngs(0))))) == NNX_PATHS


def test_nnx_state_leaves_are_variables_but_paths_match_the_pure_form():
    state = nnx.state(NnxMLP(nnx.Rngs(0)), nnx.Param)
    variables = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))

    assert all(isinstance(v, nnx.Param) for v in variables)
    assert paths_seen(state) == paths_seen(nnx.as_pure(state))


def test_nnx_list_of_layers_gives_index_segments():
    class Stack(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(2)])

    state = nnx.state(Stack(nnx.Rngs(0)), nnx.Param)
    assert sorted(paths_seen(state)) == [
        "layers/0/bias",
        "layers/0/kernel",
        "layers/1/bias",
        "layers/1/kernel",
    ]


# --- plain pytrees --------------------------------------------------------------------------------


def test_lists_and_tuples_give_index_segments():
    tree = {
        "layers": [{"w": jnp.ones(2)}, {"w": jnp.ones(3)}],
        "pair": (jnp.ones(1), jnp.ones(1)),
    }
    assert sorted(paths_seen(tree)) == ["layers/0/w", "layers/1/w", "pair/0", "pair/1"]


def test_top_level_list_gives_bare_indices():
    assert paths_seen([jnp.ones(1), {"b": jnp.ones(1)}]) == ["0", "1/b"]


def test_dict_key_named_value_is_a_segment():
    # Only the nnx Variable attribute is dropped; a dict key that happens to be "value" stays.
    assert sorted(paths_seen({"value": jnp.ones(1), "a": {"value": jnp.ones(1)}})) == [
        "a/value",
        "value",
    ]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Block:
    w: jax.Array
    b: jax.Array


@struct.dataclass
class StructBlock:
    w: jax.Array
    b: jax.Array
    name: str = struct.field(pytree_node=False, default="block")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Affine:
    value: jax.Array
    shift: jax.Array


@pytest.mark.parametrize("cls", [Block, StructBlock], ids=["register_dataclass", "flax_struct"])
def test_registered_dataclass_gives_attribute_segments(cls):
    tree = {"block": cls(w=jnp.ones((2, 2)), b=jnp.ones(2)), "head": jnp.ones(1)}
    assert sorted(paths_seen(tree)) == ["block/b", "block/w", "head"]


def test_dataclass_field_named_value_is_a_segment():
    # A user dataclass is not an nnx Variable: its field "value" must keep its segment, or the
    # glob "affine/value" cannot select it and the leaf reads as its parent "affine".
    tree = {"affine": Affine(value=jnp.ones(2), shift=jnp.ones(2))}
    assert sorted(paths_seen(tree)) == ["affine/shift", "affine/value"]


def test_globs_select_paths_of_real_trees():
    # One glob per kind of segment, read back from which leaves an SGD step moves.
    tree = {
        "params": _linen_variables()["params"],
        "layers": [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}],
        "block": Block(w=jnp.ones(2), b=jnp.ones(2)),
    }
    tx = optkit.param_groups(
        optkit.sgd,
        [
            {"params": ["params/Dense_0/*", "layers/1/**", "block/w"], "learning_rate": 1.0},
            {"params": ["params/Dense_1/*", "layers/0/w", "block/b"], "learning_rate": 0.0},
        ],
    )
    grads = jax.tree.map(jnp.ones_like, tree)
    updates, _ = tx.update(grads, tx.init(tree), tree)

    moved = jax.tree.map(lambda u: bool(jnp.all(u == -1.0)), updates)
    frozen = jax.tree.map(lambda u: bool(jnp.all(u == 0.0)), updates)
    assert moved["params"]["Dense_0"] == {"bias": True, "kernel": True}
    assert frozen["params"]["Dense_1"] == {"bias": True, "kernel": True}
    assert [moved["layers"][1]["w"], frozen["layers"][0]["w"]] == [True, True]
    assert [moved["block"].w, frozen["block"].b] == [True, True]


# --- end to end -----------------------------------------------------------------------------------

INPUTS = np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(5, 3)
TARGETS = np.array([[0.5], [-1.0], [0.25], [1.0], [-0.5]], dtype=np.float32)


def _changed(before: Any, after: Any) -> dict:
    return jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)


def test_linen_train_state_with_param_groups():
    model = LinenMLP()
    params = model.init(jax.random.key(1), INPUTS)["params"]
    tx = optkit.param_groups(
        optkit.adamw,
        [
            {"params": "Dense_0/**", "learning_rate": 0.0},
            {"params": "Dense_1/kernel", "weight_decay": 0.1},
            {"params": "Dense_1/bias", "weight_decay": 0.0},
        ],
        learning_rate=0.05,
    )
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    def loss(params: Any, apply_fn: Any) -> jax.Array:
        return jnp.mean((apply_fn({"params": params}, INPUTS) - TARGETS) ** 2)

    @jax.jit
    def step(state: train_state.TrainState) -> train_state.TrainState:
        return state.apply_gradients(grads=jax.grad(loss)(state.params, state.apply_fn))

    start_loss = loss(params, model.apply)
    for _ in range(5):
        state = step(state)

    assert _changed(params, state.params) == {
        "Dense_0": {"bias": False, "kernel": False},
        "Dense_1": {"bias": True, "kernel": True},
    }
    assert loss(state.params, model.apply) < start_loss


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "nnx_jit"])
def test_nnx_optimizer_with_param_groups(jit):
    model = NnxMLP(nnx.Rngs(1))
    tx = optkit.param_groups(
        optkit.adam,
        [
            {"params": "l1/**", "learning_rate": 0.0},
            {"params": "l2/kernel", "b1": 0.5},
            {"params": "l2/bias"},
        ],
        learning_rate=0.05,
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = nnx.to_pure_dict(nnx.clone(nnx.state(model, nnx.Param)))

    def loss(model: NnxMLP) -> jax.Array:
        return jnp.mean((model(INPUTS) - TARGETS) ** 2)

    def step(model: NnxMLP, optimizer: nnx.Optimizer) -> None:
        optimizer.update(model, nnx.grad(loss)(model))

    step = nnx.jit(step) if jit else step
    start_loss = loss(model)
    for _ in range(5):
        step(model, optimizer)

    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert _changed(before, after) == {
        "l1": {"bias": False, "kernel": False},
        "l2": {"bias": True, "kernel": True},
    }
    assert loss(model) < start_loss
