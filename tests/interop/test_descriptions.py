"""Every torch-named optimizer says what it is, and saying it changes nothing else.

The checkpoint functions read an optimizer's ``description`` (its torch class and arguments); the
optimizer stays the ``(init, update)`` NamedTuple that optax, Flax and ``jax.jit`` take.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import optkit
from optkit._base import DescribedTransformation, ParamGroupsDescription
from optkit.interop._torch_classes import TORCH_CLASSES
from tests.support.registry import REGISTRY

by_row = pytest.mark.parametrize("info", REGISTRY, ids=[info.name for info in REGISTRY])
PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


@by_row
def test_optimizer_describes_its_torch_class_and_every_argument(info):
    tx = info.factory(**info.typical)
    description = tx.description
    assert description.torch_class == info.torch_class
    signature = inspect.signature(info.factory)
    assert list(description.arguments) == list(signature.parameters)
    for name, parameter in signature.parameters.items():
        expected = info.typical.get(name, parameter.default)
        assert description.arguments[name] == expected, name
    with pytest.raises(TypeError):
        description.arguments["learning_rate"] = 1.0  # read-only


@by_row
def test_every_class_but_lbfgs_has_a_state_dict_layout(info):
    assert (info.torch_class in TORCH_CLASSES) == (info.torch_class != "LBFGS")


@by_row
def test_injected_optimizer_keeps_the_description(info):
    injected = optkit.inject_hyperparams(info.factory)(**info.typical)
    assert injected.description == info.factory(**info.typical).description


def test_param_groups_describe_each_group_and_its_leaves():
    tx = optkit.param_groups(
        optkit.inject_hyperparams(optkit.sgd),
        [{"params": "w"}, {"params": "b", "learning_rate": 0.0}],
        learning_rate=0.1,
        momentum=0.9,
    )
    description = tx.description
    assert isinstance(description, ParamGroupsDescription)
    assert [g.arguments["learning_rate"] for g in description.groups] == [0.1, 0.0]
    assert description.group_of(PARAMS) == [1, 0]  # leaves in path order: b, w


def test_a_described_optimizer_is_still_the_named_tuple():
    tx = optkit.adamw(learning_rate=0.1)
    init, update = tx
    assert isinstance(tx, DescribedTransformation) and tx._fields == ("init", "update")
    assert tx == optkit.GradientTransformation(init, update)
    assert hash(tx) == hash(optkit.GradientTransformation(init, update))
    assert tx._replace(update=update).description is None
    state = jax.jit(init)(PARAMS)
    updates, _ = jax.jit(update)(PARAMS, state, PARAMS)
    chained = optax.chain(optax.clip(1.0), tx)
    expected, _ = chained.update(PARAMS, chained.init(PARAMS), PARAMS)
    assert jax.tree.structure(updates) == jax.tree.structure(expected)


def test_chains_and_optax_transforms_are_not_described():
    for tx in (optkit.chain(optkit.adam()), optax.adam(1e-3), optkit.flatten(optkit.adam())):
        assert optkit._base.description_of(tx) is None
