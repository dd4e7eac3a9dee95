"""param_groups: torch-style parameter groups, checked against torch.optim and by hand.

The parity cases run a small non-convex two-layer model written twice with identical math, once as
a nested dict of jax arrays and once as a torch ``nn.Module`` with ``base`` and ``classifier``
submodules, so the seed document's examples (``model.base.parameters()``, ``named_parameters()``
filtered on ``'bias'``) are written on the torch side exactly as the seed writes them. Each case
runs 30 float64 steps and must match torch to rtol 1e-10 (atol 1e-12 for entries near zero), as
tests/optimizers/test_parity.py does for the single-group optimizers.

The selector tests read group membership back from the updates: with ``sgd`` and gradients of
ones, a leaf in a group with learning rate ``lr`` gets the update ``-lr``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.optimizers.test_parity import TOLERANCES
from tests.parity.runner import compare, stack
from tests.support.torch_oracle import require_torch

STEPS = 30

# --- the model, in jax and in torch ---------------------------------------------------------------

_RNG = np.random.default_rng(7)
INPUTS = _RNG.normal(size=(8, 4))
TARGETS = _RNG.normal(size=(8, 2))
INITIAL = {
    "base": {"w": _RNG.normal(size=(4, 3)), "b": 0.5 * _RNG.normal(size=(3,))},
    "classifier": {"w": _RNG.normal(size=(3, 2)), "bias": 0.5 * _RNG.normal(size=(2,))},
}
LEAVES = ["base/b", "base/w", "classifier/bias", "classifier/w"]


def flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Leaves keyed by ``/``-joined dict keys, built here rather than by optkit."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.array(value)
    return out


def jax_loss(params: dict) -> jax.Array:
    hidden = jnp.tanh(INPUTS @ params["base"]["w"] + params["base"]["b"])
    outputs = hidden @ params["classifier"]["w"] + params["classifier"]["bias"]
    return jnp.mean((outputs - TARGETS) ** 2)


def torch_model() -> Any:
    """The same model as an ``nn.Module``: ``model.base.{w, b}``, ``model.classifier.{w, bias}``."""
    import torch

    def module(**tensors: np.ndarray) -> torch.nn.Module:
        m = torch.nn.Module()
        for name, value in tensors.items():
            m.register_parameter(name, torch.nn.Parameter(torch.tensor(value)))
        return m

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = module(**INITIAL["base"])
            self.classifier = module(**INITIAL["classifier"])

        def forward(self) -> torch.Tensor:
            hidden = torch.tanh(torch.tensor(INPUTS) @ self.base.w + self.base.b)
            outputs = hidden @ self.classifier.w + self.classifier.bias
            return torch.mean((outputs - torch.tensor(TARGETS)) ** 2)

    return Model()


# --- the parity table -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupCase:
    """One parity case: param_groups in optkit and the torch.optim call with the same groups.

    ``make_torch(torch, model)`` builds the torch optimizer; ``frozen`` names the leaves in a
    learning_rate=0 group, which must not move at all; ``clip`` is a max global norm applied
    to the gradients before each step (``clip_grad_norm_`` in torch).
    """

    id: str
    make_optkit: Callable[[], optkit.GradientTransformation]
    make_torch: Callable[[Any, Any], Any]
    frozen: frozenset[str] = frozenset()
    clip: float | None = None


def _named(model: Any, keep: Callable[[str], bool]) -> list:
    return [p for name, p in model.named_parameters() if keep(name)]


CASES = [
    # The seed's first example: a larger learning rate for model.base.
    GroupCase(
        "seed_lr_per_module",
        lambda: optkit.param_groups(
            optkit.sgd,
            [{"params": "base/**", "learning_rate": 1e-2}, {"params": "classifier/**"}],
            learning_rate=1e-3,
            momentum=0.9,
        ),
        lambda torch, model: torch.optim.SGD(
            [
                {"params": model.base.parameters(), "lr": 1e-2},
                {"params": model.classifier.parameters()},
            ],
            lr=1e-3,
            momentum=0.9,
        ),
    ),
    # The seed's second example: no weight decay on biases.
    GroupCase(
        "seed_no_bias_decay",
        lambda: optkit.param_groups(
            optkit.sgd,
            [
                {"params": lambda path, leaf: "bias" not in path},
                {"params": lambda path, leaf: "bias" in path, "weight_decay": 0.0},
            ],
            weight_decay=1e-2,
            learning_rate=1e-2,
        ),
        lambda torch, model: torch.optim.SGD(
            [
                {"params": _named(model, lambda name: "bias" not in name)},
                {"params": _named(model, lambda name: "bias" in name), "weight_decay": 0},
            ],
            weight_decay=1e-2,
            lr=1e-2,
        ),
    ),
    GroupCase(
        "adamw_groups",
        lambda: optkit.param_groups(
            optkit.adamw,
            [
                {"params": "base/w", "learning_rate": 2e-2, "weight_decay": 0.1, "b1": 0.8},
                {"params": "base/b", "learning_rate": 0.0},
                {"params": "classifier/**", "b2": 0.99, "weight_decay": 0.0},
            ],
            learning_rate=1e-2,
            weight_decay=1e-2,
        ),
        lambda torch, model: torch.optim.AdamW(
            [
                {"params": [model.base.w], "lr": 2e-2, "weight_decay": 0.1, "betas": (0.8, 0.999)},
                {"params": [model.base.b], "lr": 0.0},
                {
                    "params": model.classifier.parameters(),
                    "betas": (0.9, 0.99),
                    "weight_decay": 0.0,
                },
            ],
            lr=1e-2,
            weight_decay=1e-2,
        ),
        frozen=frozenset({"base/b"}),
    ),
    GroupCase(
        "rmsprop_groups",
        lambda: optkit.param_groups(
            optkit.rmsprop,
            [
                {"params": "**/w", "alpha": 0.9, "momentum": 0.5, "centered": True},
                {"params": "base/b", "learning_rate": 0.0, "momentum": 0.9},
                {"params": "classifier/bias", "learning_rate": 3e-3, "weight_decay": 0.1},
            ],
            learning_rate=1e-2,
        ),
        lambda torch, model: torch.optim.RMSprop(
            [
                {
                    "params": [model.base.w, model.classifier.w],
                    "alpha": 0.9,
                    "momentum": 0.5,
                    "centered": True,
                },
                {"params": [model.base.b], "lr": 0.0, "momentum": 0.9},
                {"params": [model.classifier.bias], "lr": 3e-3, "weight_decay": 0.1},
            ],
            lr=1e-2,
        ),
        frozen=frozenset({"base/b"}),
    ),
    # Clipping sees all groups together, as clip_grad_norm_(model.parameters()) does.
    GroupCase(
        "clip_then_groups",
        lambda: optkit.chain(
            optkit.clip_by_global_norm(0.5),
            optkit.param_groups(
                optkit.sgd,
                [
                    {"params": "classifier/**", "learning_rate": 0.0},
                    {"params": "base/**", "momentum": 0.9, "nesterov": True},
                ],
                learning_rate=5e-2,
            ),
        ),
        lambda torch, model: torch.optim.SGD(
            [
                {"params": model.classifier.parameters(), "lr": 0.0},
                {"params": model.base.parameters(), "momentum": 0.9, "nesterov": True},
            ],
            lr=5e-2,
        ),
        frozen=frozenset({"classifier/bias", "classifier/w"}),
        clip=0.5,
    ),
]


def run_optkit(case: GroupCase) -> dict[str, np.ndarray]:
    """Params before and after each of ``STEPS`` jitted optkit steps, stacked per leaf."""
    tx = case.make_optkit()
    params = jax.tree.map(jnp.asarray, INITIAL)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(jax_loss)(params)
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    trajectory = [flat(params)]
    for _ in range(STEPS):
        params, state = step(params, state)
        trajectory.append(flat(params))
    return stack(trajectory)


def run_torch(case: GroupCase) -> dict[str, np.ndarray]:
    """Params before and after each of ``STEPS`` torch.optim steps, stacked per leaf."""
    import torch

    model = torch_model()
    optimizer = case.make_torch(torch, model)

    def snapshot() -> dict[str, np.ndarray]:
        return {
            name.replace(".", "/"): p.detach().numpy().copy()
            for name, p in model.named_parameters()
        }

    trajectory = [snapshot()]
    for _ in range(STEPS):
        optimizer.zero_grad()
        model().backward()
        if case.clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), case.clip)
        optimizer.step()
        trajectory.append(snapshot())
    return stack(trajectory)


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_matches_torch_param_groups(case):
    require_torch()
    ours, theirs = run_optkit(case), run_torch(case)

    assert sorted(ours) == sorted(theirs) == LEAVES
    tolerance = TOLERANCES["float64"]
    mismatch = compare(ours, theirs, rtol=tolerance.rtol, atol=tolerance.atol)
    assert mismatch is None, f"{case.id}: {mismatch}"
    for name in LEAVES:
        travel = np.max(np.abs(theirs[name][-1] - theirs[name][0]))
        if name in case.frozen:
            # torch leaves a learning_rate=0 group exactly where it was; so must optkit.
            assert travel == 0.0, name
            start = flat(INITIAL)[name]
            assert all(params.tobytes() == start.tobytes() for params in ours[name]), name
        else:
            assert travel > 1e-2, f"{name} moved only {travel:.2g}: the case checks too little"


# --- selectors ------------------------------------------------------------------------------------

SELECTOR_PARAMS = {
    "base": {"w": (2, 3), "b": (3,), "block": {"w": (3, 3), "bias": (3,)}},
    "baseline": {"w": (2,)},
    "classifier": {"w": (3, 2), "bias": (2,)},
}
ALL = {
    "base/b",
    "base/block/bias",
    "base/block/w",
    "base/w",
    "baseline/w",
    "classifier/bias",
    "classifier/w",
}


def _tree(fill: float = 1.0) -> dict:
    return jax.tree.map(
        lambda shape: jnp.full(shape, fill), SELECTOR_PARAMS, is_leaf=lambda x: isinstance(x, tuple)
    )


def _sgd_groups(groups: list[dict], **defaults: Any) -> optkit.GradientTransformation:
    return optkit.param_groups(optkit.sgd, groups, **defaults)


SELECTORS = {
    "glob_subtree": ("base/**", ALL - {"baseline/w", "classifier/bias", "classifier/w"}),
    "glob_star_one_segment": ("base/*", {"base/b", "base/w"}),
    "glob_leading_double_star": ("**/bias", {"base/block/bias", "classifier/bias"}),
    "glob_star_first_segment": ("*/w", {"base/w", "baseline/w", "classifier/w"}),
    "glob_any_depth": ("**/w", {"base/w", "base/block/w", "baseline/w", "classifier/w"}),
    "glob_inner_double_star": ("base/**/w", {"base/w", "base/block/w"}),
    "glob_star_in_segment": ("base*/**", ALL - {"classifier/bias", "classifier/w"}),
    "glob_question_mark": ("ba?e/*", {"base/b", "base/w"}),
    "glob_everything": ("**", ALL),
    "glob_exact": ("classifier/bias", {"classifier/bias"}),
    "glob_list": (["base/b", "**/bias"], {"base/b", "base/block/bias", "classifier/bias"}),
    "glob_tuple": (
        ("classifier/*", "baseline/w"),
        {"classifier/bias", "classifier/w", "baseline/w"},
    ),
    "callable_path": (lambda path, leaf: "bias" in path, {"base/block/bias", "classifier/bias"}),
    "callable_ndim": (
        lambda path, leaf: leaf.ndim == 2,
        {"base/w", "base/block/w", "classifier/w"},
    ),
    "bool_tree": (
        {
            "base": {"w": True, "b": False, "block": {"w": False, "bias": True}},
            "baseline": {"w": True},
            "classifier": {"w": False, "bias": False},
        },
        {"base/w", "base/block/bias", "baseline/w"},
    ),
    "bool_prefix": (
        {"base": {"w": True, "b": False, "block": True}, "baseline": False, "classifier": False},
        {"base/w", "base/block/bias", "base/block/w"},
    ),
}


def _assigned_learning_rates(selector: Any, expected: set[str]) -> dict[str, float]:
    """Group 0 is ``selector`` (lr 1), group 1 every leaf not in ``expected`` (lr 2); read back
    each leaf's learning rate from one SGD step on gradients of ones."""
    rest = [{"params": lambda path, leaf: path not in expected, "learning_rate": 2.0}]
    tx = _sgd_groups(
        [{"params": selector, "learning_rate": 1.0}, *(rest if set(expected) != set(ALL) else [])]
    )
    params = _tree()
    updates, _ = tx.update(_tree(1.0), tx.init(params), params)
    rates = {}
    for path, update in flat(updates).items():
        assert np.all(update == update.flat[0]), path
        rates[path] = -float(update.flat[0])
    return rates


@pytest.mark.parametrize(("selector", "expected"), SELECTORS.values(), ids=list(SELECTORS))
def test_selector_picks_exactly_these_leaves(selector, expected):
    rates = _assigned_learning_rates(selector, expected)

    assert rates == {path: 1.0 if path in expected else 2.0 for path in ALL}


def test_repeated_double_star_matches_like_one():
    # "**/**" is "any number of segments" twice, which is still any number: every leaf.
    rates = _assigned_learning_rates("**/**", ALL)

    assert rates == dict.fromkeys(ALL, 1.0)


def test_glob_does_not_match_a_longer_segment_name():
    # "base/**" must not reach into "baseline"; "classifier/b" is not "classifier/bias".
    tx = _sgd_groups([{"params": "base/**"}, {"params": "classifier/**"}], learning_rate=0.1)
    with pytest.raises(ValueError, match="no group") as error:
        tx.init(_tree())
    assert "'baseline/w'" in str(error.value)
    tx = _sgd_groups([{"params": "**"}, {"params": "classifier/b"}], learning_rate=0.1)
    with pytest.raises(ValueError, match="group 1: the glob 'classifier/b' matches no leaf"):
        tx.init(_tree())


def test_selector_sees_updates_when_update_gets_no_params():
    tx = _sgd_groups(
        [{"params": "base/**", "learning_rate": 1.0}, {"params": ["baseline/*", "classifier/*"]}],
        learning_rate=2.0,
    )
    updates, _ = tx.update(_tree(1.0), tx.init(_tree()))

    for path, update in flat(updates).items():
        np.testing.assert_array_equal(update, -1.0 if path.startswith("base/") else -2.0, path)


def test_callable_selector_must_return_a_bool():
    tx = _sgd_groups([{"params": lambda path, leaf: "yes"}], learning_rate=0.1)
    with pytest.raises(TypeError, match="group 0") as error:
        tx.init(_tree())
    assert "base/b" in str(error.value)


# --- errors ---------------------------------------------------------------------------------------


def test_leaf_in_no_group_is_a_value_error_at_init_listing_the_paths():
    tx = _sgd_groups([{"params": "base/**"}, {"params": "classifier/w"}], learning_rate=0.1)
    with pytest.raises(ValueError, match="no group") as error:
        tx.init(_tree())
    assert "'baseline/w'" in str(error.value)
    assert "'classifier/bias'" in str(error.value)
    assert "'base/w'" not in str(error.value)


def test_leaf_in_two_groups_is_a_value_error_naming_the_path_and_groups():
    tx = _sgd_groups(
        [
            {"params": "classifier/**"},
            {"params": "base/**"},
            {"params": ["**/bias", "baseline/w"], "weight_decay": 0.0},
        ],
        learning_rate=0.1,
    )
    with pytest.raises(ValueError, match="more than one group") as error:
        tx.init(_tree())
    message = str(error.value)
    assert re.search(r"'classifier/bias'[^']*\b0\b[^']*\b2\b", message), message
    assert re.search(r"'base/block/bias'[^']*\b1\b[^']*\b2\b", message), message
    assert "baseline/w" not in message


@pytest.mark.parametrize(
    "groups",
    [
        {"params": "**"},
        "**",
        [],
        [{"params": "base/**"}, {"learning_rate": 0.1}],
        [{"params": "**"}, "classifier/**"],
        (group for group in [{"params": "**"}]),
    ],
    ids=["dict", "string", "empty", "group_without_params", "group_not_a_dict", "generator"],
)
def test_malformed_groups_are_a_type_error(groups):
    with pytest.raises(TypeError, match="param_groups"):
        _sgd_groups(groups, learning_rate=0.1)


@pytest.mark.parametrize(
    ("optimizer", "bad", "argument"),
    [
        (optkit.sgd, {"learning_rate": -1e-3}, "learning_rate"),
        (optkit.sgd, {"momentum": -0.5}, "momentum"),
        (optkit.sgd, {"dampening": 1.5}, "dampening"),
        (optkit.adamw, {"b1": 1.0}, "b1"),
        (optkit.adamw, {"weight_decay": float("nan")}, "weight_decay"),
        (optkit.rmsprop, {"alpha": -0.1}, "alpha"),
    ],
    ids=["sgd_lr", "sgd_momentum", "sgd_dampening", "adamw_b1", "adamw_wd_nan", "rmsprop_alpha"],
)
def test_invalid_hyperparameter_names_the_group_and_argument(optimizer, bad, argument):
    with pytest.raises(ValueError, match="group 1") as error:
        optkit.param_groups(optimizer, [{"params": "base/**"}, {"params": "classifier/**", **bad}])
    assert argument in str(error.value)


def test_invalid_default_is_reported_for_the_first_group_using_it():
    with pytest.raises(ValueError, match="group 0") as error:
        _sgd_groups([{"params": "**"}], learning_rate=0.1, momentum=-1.0)
    assert "momentum" in str(error.value)


def test_unknown_hyperparameter_is_a_value_error_naming_the_group():
    with pytest.raises(ValueError, match="group 1") as error:
        _sgd_groups([{"params": "base/**"}, {"params": "classifier/**", "lr": 0.1}])
    assert "lr" in str(error.value)


# --- state, jit and composition -------------------------------------------------------------------


def test_state_per_group_holds_only_its_leaves():
    tx = optkit.param_groups(
        optkit.sgd,
        [
            {"params": "base/**", "momentum": 0.9},
            {"params": "classifier/**", "momentum": 0.5},
            {"params": "baseline/**"},
        ],
        learning_rate=0.1,
    )
    state = tx.init(_tree())

    assert isinstance(state, optkit.ParamGroupsState)
    assert len(state.groups) == 3
    buffers = [
        sorted(x.shape for x in jax.tree.leaves(group) if x.dtype.kind == "f")
        for group in state.groups
    ]
    # One momentum buffer per leaf of the group; the third group has no momentum, so no buffer.
    assert buffers == [[(2, 3), (3,), (3,), (3, 3)], [(2,), (3, 2)], []]


def test_adamw_state_per_group_holds_two_moments_of_its_leaves():
    tx = optkit.param_groups(
        optkit.adamw, [{"params": "classifier/*"}, {"params": ["base/**", "baseline/**"]}]
    )
    state = tx.init(_tree())

    float_sizes = [
        sum(x.size for x in jax.tree.leaves(group) if x.dtype.kind == "f") for group in state.groups
    ]
    # mu and nu: 2 * (6 + 2) for the classifier; 2 * (6 + 3 + 9 + 3 + 2) for the rest.
    assert float_sizes == [16, 46]


def test_under_jit_matches_eager():
    tx = optkit.param_groups(
        optkit.adamw,
        [
            {"params": lambda path, leaf: leaf.ndim == 2, "learning_rate": 0.1},
            {"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0, "b1": 0.5},
        ],
        learning_rate=0.01,
    )
    params = _tree(0.5)
    grads = jax.tree.map(lambda x: jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) - 0.5, params)
    state = jax.jit(tx.init)(params)
    eager, _ = tx.update(grads, state, params)
    jitted, _ = jax.jit(tx.update)(grads, state, params)

    for path, value in flat(jitted).items():
        np.testing.assert_allclose(value, flat(eager)[path], rtol=1e-13, err_msg=path)
        assert np.all(value != 0.0), path


def test_inside_chain_after_global_norm_clipping():
    tx = optkit.chain(
        optkit.clip_by_global_norm(1.0),
        _sgd_groups(
            [
                {"params": "base/**", "learning_rate": 0.1},
                {"params": "baseline/**", "learning_rate": 0.0},
                {"params": "classifier/**", "weight_decay": 0.5},
            ],
            learning_rate=0.2,
        ),
    )
    params, grads = _tree(2.0), _tree(1.0)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)

    # Gradients of ones over 31 entries: global norm sqrt(31), torch's clip factor 1/(norm + 1e-6).
    clipped = 1.0 / (np.sqrt(31.0) + 1e-6)
    expected = {
        "base": -0.1 * clipped,
        "baseline": 0.0,
        "classifier": -0.2 * (clipped + 0.5 * 2.0),
    }
    for path, update in flat(updates).items():
        np.testing.assert_allclose(update, expected[path.split("/")[0]], rtol=1e-12, err_msg=path)


def test_learning_rate_zero_group_stays_bit_identical():
    tx = _sgd_groups(
        [
            {"params": "classifier/**", "learning_rate": 0.0, "momentum": 0.9},
            {"params": ["base/**", "baseline/**"]},
        ],
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.1,
    )
    params = jax.tree.map(lambda x: x * jnp.linspace(-1.0, 1.0, x.size).reshape(x.shape), _tree())
    start = flat(params)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(p)))
        updates, state = tx.update(grads(params), state, params)
        return optkit.apply_updates(params, updates), state

    for _ in range(5):
        params, state = step(params, state)

    for path, value in flat(params).items():
        if path.startswith("classifier/"):
            assert value.tobytes() == start[path].tobytes(), path
        else:
            assert not np.array_equal(value, start[path]), path
