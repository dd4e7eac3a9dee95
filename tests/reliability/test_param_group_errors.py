"""Reliability rows: param groups whose selector matches nothing or whose keys the optimizer does
not take.

A misspelled glob (``"**/bais"``) used to be accepted, its leaves then silently taken by a
catch-all group with other hyperparameters; a torch key (``"lr"``, ``"betas"``) or a typo
(``"weight_decy"``) must not be lost either. Each check runs at the earliest moment it can:
unknown keys when ``param_groups`` is built (the optimizer's signature says which names it
takes, ``inject_hyperparams`` keeps it), selectors at ``init``/``update`` (they need the tree).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import pytest

import optkit
from tests.reliability.table import Refused, check_refused, params_of

PARAMS = {"layer": {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
EVERYTHING_ELSE = {"params": lambda path, leaf: "bias" not in path}


def init_with(groups: list[dict[str, Any]], optimizer: Any = optkit.adamw, **defaults: Any):
    """Builds now (a selector is only checked against a tree), fails at ``init``."""
    tx = optkit.param_groups(optimizer, groups, **{"learning_rate": 0.1, **defaults})
    return lambda: tx.init(PARAMS)


def build_with(groups: list[dict[str, Any]], optimizer: Any = optkit.adamw, **defaults: Any):
    """Fails when built: the optimizer's signature says which keys it takes."""
    return lambda: optkit.param_groups(optimizer, groups, **{"learning_rate": 0.1, **defaults})


LEAF_PATHS = ("'head/w'", "'layer/bias'")

SELECTOR_ROWS = [
    Refused(
        "misspelled-glob-with-catch-all",
        init_with([{"params": "**/bais", "weight_decay": 0.0}, {"params": "**"}]),
        ValueError,
        ("group 0", "the glob '**/bais' matches no leaf", *LEAF_PATHS),
    ),
    Refused(
        "one-glob-of-a-list-matches-nothing",
        init_with([{"params": ["**/bias", "head/bais"], "weight_decay": 0.0}, EVERYTHING_ELSE]),
        ValueError,
        ("group 0", "the glob 'head/bais' matches no leaf"),
    ),
    Refused(
        "glob-for-a-longer-segment-name",
        init_with([{"params": "layer/b"}, {"params": "**"}]),
        ValueError,
        ("group 0", "the glob 'layer/b' matches no leaf", "'layer/bias'"),
    ),
    Refused(
        "function-selects-nothing",
        init_with([{"params": lambda path, leaf: path.endswith("/b")}, {"params": "**"}]),
        ValueError,
        ("group 0", "the selector <function", "matches no leaf", *LEAF_PATHS),
    ),
    Refused(
        "mask-all-false",
        init_with(
            [{"params": {"layer": False, "head": False}}, {"params": {"layer": True, "head": True}}]
        ),
        ValueError,
        ("group 0", "the mask (every entry is False) matches no leaf"),
    ),
    Refused(
        "misspelled-glob-in-second-group-of-injected",
        init_with(
            [EVERYTHING_ELSE, {"params": "**/Bias", "weight_decay": 0.0}],
            optkit.inject_hyperparams(optkit.adamw),
        ),
        ValueError,
        ("group 1", "the glob '**/Bias' matches no leaf"),
    ),
]

KEY_ROWS = [
    Refused(
        "lr-key",
        build_with([{"params": "**", "lr": 0.01}]),
        ValueError,
        ("group 0", "'lr'", "adamw does not take", "'learning_rate'"),
    ),
    Refused(
        "betas-key",
        build_with([EVERYTHING_ELSE, {"params": "**/bias", "betas": (0.9, 0.99)}]),
        ValueError,
        ("group 1", "'betas'", "'b1' and 'b2'"),
    ),
    Refused(
        "weight_decy-typo",
        build_with([{"params": "**", "weight_decy": 0.0}]),
        ValueError,
        ("group 0", "'weight_decy'", "did you mean 'weight_decay'?"),
    ),
    Refused(
        "momentum-key-for-adam",
        build_with([{"params": "**", "momentum": 0.9}], optkit.adam),
        ValueError,
        ("group 0", "'momentum'", "adam does not take", "b1"),
    ),
    Refused(
        "lr-key-injected",
        build_with([{"params": "**", "lr": 0.01}], optkit.inject_hyperparams(optkit.sgd)),
        ValueError,
        ("group 0", "'lr'", "sgd does not take", "'learning_rate'"),
    ),
    Refused(
        "lr-in-defaults",
        lambda: optkit.param_groups(optkit.sgd, [{"params": "**"}], lr=0.1),
        ValueError,
        ("the defaults", "'lr'", "'learning_rate'"),
    ),
    Refused(
        # A factory taking **kwargs cannot be checked before it is called; its own error is
        # reported, with the group.
        "lr-key-through-a-kwargs-factory",
        build_with([{"params": "**", "lr": 0.01}], lambda **kwargs: optkit.sgd(**kwargs)),
        TypeError,
        ("param_groups: group 0", "'lr'", "'learning_rate'"),
    ),
]


@pytest.mark.parametrize("row", params_of(SELECTOR_ROWS + KEY_ROWS))
def test_param_group_errors(row: Refused) -> None:
    check_refused(row)
