"""Reliability rows: an optimizer given a state that another optimizer's ``init`` made.

Without a check, ``sgd(momentum=0.9).update(grads, adam(0.1).init(params), params)`` fails with an
``AttributeError`` deep inside, and an amsgrad state given to a plain Adam silently drops its
running maximum. Every optimizer must instead raise a ValueError that names the state types it
expected and received (``optkit/_state.py``): checked here for each registry row given another
row's state, and for the named cases (amsgrad either way, a chain of another length, the
wrappers, under ``jit``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest

import optkit
from tests.reliability.table import Refused, check_refused, params_of
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import BY_NAME, REGISTRY

# Matrices only, so every optimizer takes them as they are (Muon's row wraps it in a partition
# for other leaves; the optimizer itself is what is checked here).
PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.ones((2, 3))}
GRADS = jax.tree.map(lambda p: 0.1 * p, PARAMS)
NOT_OURS = "the state is not this optimizer's"


def loss(params: Any) -> jax.Array:
    return sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


def state_types(state: Any) -> list[str]:
    """The NamedTuple state classes in ``state``, outermost first (found by walking it)."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, tuple):
            if hasattr(type(node), "_fields") and type(node).__name__ not in found:
                found.append(type(node).__name__)
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            for child in node.values():
                walk(child)

    walk(state)
    return found


def build(info: OptimizerInfo) -> optkit.GradientTransformation:
    return info.factory(**info.typical)


def foreign_row(info: OptimizerInfo) -> tuple[OptimizerInfo, Any]:
    """The next registry row (cyclically) whose typical state holds a state class this row's
    lacks, with that state."""
    own = set(state_types(build(info).init(PARAMS)))
    start = REGISTRY.index(info)
    for other in REGISTRY[start + 1 :] + REGISTRY[:start]:
        state = build(other).init(PARAMS)
        if set(state_types(state)) - own:
            return other, state
    raise AssertionError(f"no registry row has a state unlike {info.name}'s")


def registry_row(info: OptimizerInfo) -> Refused:
    other, state = foreign_row(info)
    own = state_types(build(info).init(PARAMS))
    foreign = [name for name in state_types(state) if name not in own]
    tx = build(info)
    return Refused(
        id=f"{info.name}-given-{other.name}-state",
        action=lambda: tx.update(GRADS, state, PARAMS, **info.update_args(loss)),
        error=ValueError,
        fragments=(NOT_OURS, f"{info.torch_class} update", own[0], foreign[0]),
    )


@pytest.mark.parametrize("row", params_of([registry_row(info) for info in REGISTRY]))
def test_every_optimizer_refuses_another_optimizers_state(row: Refused) -> None:
    check_refused(row)


def labelled(tx: optkit.GradientTransformation) -> optkit.GradientTransformation:
    return optkit.partition({"w": tx, "b": optkit.scale(0.0)}, {"w": "w", "b": "b"})


def update_with(tx: optkit.GradientTransformation, state: Any, *, jit: bool = False) -> Any:
    update = jax.jit(tx.update) if jit else tx.update
    return lambda: update(GRADS, state, PARAMS)


ROWS = [
    Refused(
        "sgd-momentum-given-adam-state",
        update_with(optkit.sgd(0.1, momentum=0.9), optkit.adam(0.1).init(PARAMS)),
        ValueError,
        (NOT_OURS, "expected (TraceState, ", "got (ScaleByAdamState, "),
    ),
    Refused(
        "sgd-momentum-given-adam-state-under-jit",
        update_with(optkit.sgd(0.1, momentum=0.9), optkit.adam(0.1).init(PARAMS), jit=True),
        ValueError,
        (NOT_OURS, "TraceState", "ScaleByAdamState"),
    ),
    Refused(
        "adam-given-amsgrad-state",
        update_with(optkit.adam(0.1), optkit.adam(0.1, amsgrad=True).init(PARAMS)),
        ValueError,
        (NOT_OURS, "ScaleByAdamState", "'0/nu_max': expected None, got a dict"),
    ),
    Refused(
        "amsgrad-given-adam-state",
        update_with(optkit.adam(0.1, amsgrad=True), optkit.adam(0.1).init(PARAMS)),
        ValueError,
        (
            NOT_OURS,
            "ScaleByAdamState",
            "'0/nu_max': expected a dict with keys ['b', 'w'], got None",
        ),
    ),
    Refused(
        "sgd-given-a-longer-chain-state",
        update_with(optkit.sgd(0.1), optkit.sgd(0.1, momentum=0.9, weight_decay=0.1).init(PARAMS)),
        ValueError,
        (NOT_OURS, "expected (EmptyState)", "got (EmptyState, TraceState, EmptyState)"),
    ),
    Refused(
        "chain-of-primitives-given-a-shorter-state",
        update_with(
            optkit.chain(optkit.trace(0.9), optkit.scale(-0.1)),
            (optkit.trace(0.9).init(PARAMS),),
        ),
        ValueError,
        ("chain: state must be a tuple of 2 states", "got a tuple of length 1"),
    ),
    Refused(
        "injected-adamw-given-injected-sgd-state",
        update_with(
            optkit.inject_hyperparams(optkit.adamw)(0.1),
            optkit.inject_hyperparams(optkit.sgd)(0.1).init(PARAMS),
        ),
        ValueError,
        (NOT_OURS, "inject_hyperparams(adamw) update", "'hyperparams'", "InjectHyperparamsState"),
    ),
    Refused(
        "injected-adam-given-plain-adam-state",
        update_with(optkit.inject_hyperparams(optkit.adam)(0.1), optkit.adam(0.1).init(PARAMS)),
        ValueError,
        (NOT_OURS, "expected InjectHyperparamsState", "got (ScaleByAdamState, EmptyState)"),
    ),
    Refused(
        "param-groups-given-one-optimizers-state",
        update_with(
            optkit.param_groups(optkit.sgd, [{"params": "w"}, {"params": "b"}], momentum=0.9),
            optkit.sgd(0.1, momentum=0.9).init(PARAMS),
        ),
        ValueError,
        (NOT_OURS, "param_groups update", "expected ParamGroupsState", "got (TraceState, "),
    ),
    Refused(
        "masked-given-adam-state",
        update_with(
            optkit.masked(optkit.trace(0.9), {"w": True, "b": False}), optkit.adam(0.1).init(PARAMS)
        ),
        ValueError,
        (NOT_OURS, "masked update", "expected MaskedState", "got (ScaleByAdamState, "),
    ),
    Refused(
        "masked-given-a-masked-state-of-another-inner",
        update_with(
            optkit.masked(optkit.trace(0.9), {"w": True, "b": False}),
            optkit.masked(optkit.scale_by_adam(), {"w": True, "b": False}).init(PARAMS),
            jit=True,
        ),
        ValueError,
        (NOT_OURS, "masked update", "'inner_state'", "TraceState", "ScaleByAdamState"),
    ),
    Refused(
        "partition-given-sgd-state",
        update_with(labelled(optkit.adam(0.1)), optkit.sgd(0.1, momentum=0.9).init(PARAMS)),
        ValueError,
        (NOT_OURS, "partition update", "expected PartitionState", "got (TraceState, "),
    ),
    Refused(
        "partition-given-a-partition-state-of-another-optimizer",
        update_with(
            labelled(optkit.adam(0.1)), labelled(optkit.sgd(0.1, momentum=0.9)).init(PARAMS)
        ),
        ValueError,
        (
            NOT_OURS,
            "partition update",
            "'inner_states/w/inner_state",
            "ScaleByAdamState",
            "TraceState",
        ),
    ),
    Refused(
        # The registry's Muon row: Muon on the matrices, AdamW on the rest, through partition.
        "muon-registry-partition-given-adam-state",
        update_with(
            BY_NAME["muon"].build(BY_NAME["muon"].factory, BY_NAME["muon"].typical),
            optkit.adam(0.1).init(PARAMS),
        ),
        ValueError,
        (NOT_OURS, "partition update", "expected PartitionState", "got (ScaleByAdamState, "),
    ),
]


@pytest.mark.parametrize("row", params_of(ROWS))
def test_wrong_state_is_refused(row: Refused) -> None:
    check_refused(row)


def test_a_state_of_the_same_optimizer_with_other_values_is_accepted() -> None:
    # Only the layout is checked: other hyperparameters, other buffers' values pass.
    state = optkit.adam(0.5, b1=0.5).init(PARAMS)
    _, state = optkit.adam(0.5, b1=0.5).update(GRADS, state, PARAMS)
    updates, _ = optkit.adam(0.1).update(GRADS, state, PARAMS)
    assert jax.tree.structure(updates) == jax.tree.structure(PARAMS)
