"""The optimizer registry: one row per public optimizer, read by every test suite.

Like torch's ``optim_db``: a row says how to build the optimizer, which ``torch.optim`` class it
reproduces, which hyperparameter variants switch on every flag (alone and combined), one typical
set-up with every state buffer on, and what the optimizer needs. Parity, validation, properties,
dtypes, runtime hyperparameters, flatten, sharding, checkpoints, Flax and the docs tests all
iterate this table, so adding an optimizer is one row here (plus its module and docs page), and a
suite cannot forget it: ``tests/test_registry.py`` checks that every public optimizer has a row.

Rows use optkit's argument names; :func:`to_torch_kwargs` derives torch's (``lr``, ``betas``).
torch is named by class name only, so this module imports without torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
from hypothesis import strategies as st

import optkit

Kwargs = Mapping[str, Any]
DrawHyperparameters = Callable[[], st.SearchStrategy[tuple[dict[str, Any], dict[str, bool]]]]
"""A hypothesis strategy of ``(numeric hyperparameters, bool flags)``, learning rate excluded."""


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    """One public optimizer and everything the generic suites need to test it.

    Attributes:
        name: The function's name in ``optkit`` (``"adamw"``).
        torch_class: The ``torch.optim`` class it reproduces (``"AdamW"``).
        docs_page: Its narrative page under ``docs/``.
        variants: Parity variants (optkit keyword arguments), switching on every flag alone and
            combined. Learning rates are chosen so 30 steps of the parity problem move every leaf
            by 0.1 or more without chaotic amplification of rounding.
        typical: One set-up with every state buffer on and a learning rate that trains the small
            regression and MLP problems of the generic suites in a few dozen steps.
        group_overrides: The second param group's overrides in the param-groups parity case.
        bfloat16_learning_rate: A learning rate that trains the dtype suite's bfloat16 problem.
        hyperparameters: Strategy for the property tests' hyperparameters.
        runtime_changes: Values given to ``set_hyperparams`` after 10 and after 20 updates of
            the first variant (an injected optimizer), compared with torch's
            ``param_groups[i][name] = value``; together they change every numeric
            hyperparameter that torch reads at each step.
        problem: The parity problem (``tests/parity/problem.py``): ``"standard"``,
            ``"matrices"`` (2-D leaves only) or ``"convex"``.
        closure: The update needs the loss function (``value_fn=``), as torch's
            ``step(closure)`` does.
        flatten: Whether the math is elementwise per leaf, so ``optkit.flatten`` keeps it.
        build: How :meth:`make` builds the optimizer for any parameter tree from the factory and
            keyword arguments. The generic suites' trees have leaves of several ranks; an
            optimizer of matrices (Muon) is built inside ``optkit.partition`` with another
            optimizer for the other leaves, as a user would.
        matrix_functions: Nested jitted functions, by name, that compute on a whole matrix as
            torch does (Muon's bfloat16 Newton-Schulz): their arithmetic is float32 or bfloat16
            whatever the params' dtype, and on a sharded matrix they reduce or gather across
            devices. The dtype suite allows float32 only inside them, and the sharding suite
            collectives only inside them: the rest of the update stays elementwise.
    """

    name: str
    torch_class: str
    docs_page: str
    variants: Mapping[str, Kwargs]
    typical: Kwargs
    group_overrides: Kwargs
    bfloat16_learning_rate: float
    hyperparameters: DrawHyperparameters
    runtime_changes: tuple[Kwargs, Kwargs]
    problem: str = "standard"
    closure: bool = False
    flatten: bool = True
    build: Callable[
        [Callable[..., optkit.GradientTransformation], Kwargs], optkit.GradientTransformation
    ] = lambda factory, kwargs: factory(**kwargs)
    matrix_functions: tuple[str, ...] = ()

    @property
    def factory(self) -> Callable[..., optkit.GradientTransformation]:
        return getattr(optkit, self.name)

    def make(self, **overrides: Any) -> optkit.GradientTransformation:
        """The typical set-up, with ``overrides`` applied, built for any parameter tree."""
        return self.build(self.factory, {**self.typical, **overrides})

    def default(self, name: str) -> Any:
        """The factory's default for argument ``name``."""
        return inspect.signature(self.factory).parameters[name].default

    def numeric_arguments(self) -> list[str]:
        """The factory's arguments whose default is a number (not a bool): hyperparameters."""
        return [name for name, default in self._defaults() if _is_number(default)]

    def flags(self) -> list[str]:
        """The factory's arguments whose default is a bool."""
        return [name for name, default in self._defaults() if isinstance(default, bool)]

    def _defaults(self) -> list[tuple[str, Any]]:
        parameters = inspect.signature(self.factory).parameters
        return [(name, p.default) for name, p in parameters.items()]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def to_torch_kwargs(kwargs: Kwargs) -> dict[str, Any]:
    """Translate optkit keyword arguments to torch.optim's names (lr, betas); the rest match."""
    torch_kwargs = dict(kwargs)
    if "learning_rate" in torch_kwargs:
        torch_kwargs["lr"] = torch_kwargs.pop("learning_rate")
    if "b1" in torch_kwargs or "b2" in torch_kwargs:
        # torch takes both betas together; fill the missing one with the shared default.
        torch_kwargs["betas"] = (torch_kwargs.pop("b1", 0.9), torch_kwargs.pop("b2", 0.999))
    return torch_kwargs


# --- hypothesis strategies for the property tests ---------------------------------------------


def unit(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def zero_or(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.just(0.0), unit(low, high))


EPS = unit(1e-8, 1e-2)
WEIGHT_DECAY = zero_or(1e-4, 0.1)


@st.composite
def _sgd(draw):
    nesterov = draw(st.booleans())
    hp = {"momentum": draw(unit(0.05, 0.95) if nesterov else zero_or(0.05, 0.95))}
    if not nesterov:
        hp["dampening"] = draw(zero_or(0.01, 1.0))
    hp["weight_decay"] = draw(WEIGHT_DECAY)
    return hp, {"nesterov": nesterov}


@st.composite
def _adam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {"amsgrad": draw(st.booleans())}


@st.composite
def _adagrad(draw):
    hp = {
        "lr_decay": draw(zero_or(1e-3, 0.5)),
        "weight_decay": draw(WEIGHT_DECAY),
        "initial_accumulator_value": draw(zero_or(1e-3, 1.0)),
        "eps": draw(unit(1e-10, 1e-3)),
    }
    return hp, {}


@st.composite
def _rmsprop(draw):
    centered = draw(st.booleans())
    # Centered with alpha = 0 estimates the variance as g*g - g*g = 0, whose rounding (FMA under
    # jit) can be negative: sqrt gives NaN, as in torch. That degenerate case is left out.
    hp = {
        "alpha": draw(unit(0.1, 0.999) if centered else zero_or(0.1, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
        "momentum": draw(zero_or(0.05, 0.95)),
    }
    return hp, {"centered": centered}


# --- the rows ---------------------------------------------------------------------------------
# The amsgrad variants use b2=0.9 so the second moment actually shrinks and the running max
# differs from plain Adam. Rows with maximize use smaller learning rates: gradient ascent on the
# mostly convex parity loss amplifies any difference, rounding included, at every step.

SGD = OptimizerInfo(
    name="sgd",
    torch_class="SGD",
    docs_page="sgd.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "momentum": {"learning_rate": 0.02, "momentum": 0.9},
        "dampening": {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.3},
        "nesterov": {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        # torch forbids nesterov with dampening, so "everything on" takes two rows.
        "dampening_wd_maximize": {
            "learning_rate": 0.002,
            "momentum": 0.8,
            "dampening": 0.5,
            "weight_decay": 0.1,
            "maximize": True,
        },
        "nesterov_wd_maximize": {
            "learning_rate": 0.001,
            "momentum": 0.8,
            "nesterov": True,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "momentum": 0.5},
    bfloat16_learning_rate=0.05,
    hyperparameters=_sgd,
    runtime_changes=(
        {"momentum": 0.9, "weight_decay": 0.1},
        {"dampening": 0.3, "learning_rate": 0.01},
    ),
)

ADAM = OptimizerInfo(
    name="adam",
    torch_class="Adam",
    docs_page="adam.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "betas_eps": {"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "amsgrad_wd_maximize": {
            "learning_rate": 0.01,
            "b2": 0.9,
            "amsgrad": True,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 1e-4, "amsgrad": True},
    group_overrides={"learning_rate": 0.005, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adam,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.99, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 0.02},
    ),
)

ADAMW = OptimizerInfo(
    name="adamw",
    torch_class="AdamW",
    docs_page="adam.md",
    variants={
        "default_wd": {"learning_rate": 0.01},
        "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "wd": {"learning_rate": 0.01, "weight_decay": 0.1},
        "combined": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "amsgrad": True,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 1e-2, "amsgrad": True},
    group_overrides={"learning_rate": 0.005, "weight_decay": 0.0},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adam,
    runtime_changes=(
        {"b2": 0.9, "weight_decay": 0.0},
        {"weight_decay": 0.3, "learning_rate": 0.02, "b1": 0.8, "eps": 1e-4},
    ),
)

ADAGRAD = OptimizerInfo(
    name="adagrad",
    torch_class="Adagrad",
    docs_page="adagrad.md",
    variants={
        "plain": {"learning_rate": 0.1},
        "lr_decay": {"learning_rate": 0.1, "lr_decay": 0.05},
        "initial_accumulator": {"learning_rate": 0.1, "initial_accumulator_value": 0.5},
        "weight_decay": {"learning_rate": 0.1, "weight_decay": 0.1},
        "eps": {"learning_rate": 0.1, "eps": 1e-2},
        "maximize": {"learning_rate": 0.05, "maximize": True},
        "combined": {
            "learning_rate": 0.1,
            "lr_decay": 0.05,
            "initial_accumulator_value": 0.5,
            "weight_decay": 0.1,
            "eps": 1e-2,
            "maximize": True,
        },
    },
    typical={
        "learning_rate": 0.1,
        "lr_decay": 1e-2,
        "initial_accumulator_value": 0.1,
        "weight_decay": 1e-4,
    },
    group_overrides={"learning_rate": 0.05, "lr_decay": 0.01},
    bfloat16_learning_rate=0.3,
    hyperparameters=_adagrad,
    runtime_changes=(
        {"lr_decay": 0.2, "weight_decay": 0.1},
        {"learning_rate": 0.05, "eps": 1e-3},
    ),
)

RMSPROP = OptimizerInfo(
    name="rmsprop",
    torch_class="RMSprop",
    docs_page="rmsprop.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "alpha_eps": {"learning_rate": 0.01, "alpha": 0.9, "eps": 1e-3},
        "centered": {"learning_rate": 0.01, "centered": True},
        "momentum": {"learning_rate": 0.01, "momentum": 0.5},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "centered_momentum_wd": {
            "learning_rate": 0.01,
            "centered": True,
            "momentum": 0.5,
            "weight_decay": 0.1,
        },
    },
    typical={
        "learning_rate": 2e-3,
        "alpha": 0.9,
        "momentum": 0.9,
        "centered": True,
        "weight_decay": 1e-4,
    },
    group_overrides={"learning_rate": 0.005, "momentum": 0.3},
    bfloat16_learning_rate=0.02,
    hyperparameters=_rmsprop,
    runtime_changes=(
        {"alpha": 0.9, "momentum": 0.8},
        {"weight_decay": 0.1, "eps": 1e-3, "learning_rate": 0.005},
    ),
)


@st.composite
def _muon(draw):
    nesterov = draw(st.booleans())
    hp = {
        "momentum": draw(zero_or(0.05, 0.99)),
        "weight_decay": draw(WEIGHT_DECAY),
        "eps": draw(unit(1e-8, 1e-3)),
    }
    return hp, {"nesterov": nesterov}


def _muon_on_matrices(
    factory: Callable[..., optkit.GradientTransformation], kwargs: Kwargs
) -> optkit.GradientTransformation:
    """Muon on the 2-D leaves and AdamW (torch's defaults, Muon's learning rate) on the others,
    the set-up torch's documentation recommends."""
    labels = lambda params: jax.tree.map(lambda p: "matrix" if p.ndim == 2 else "other", params)
    other = optkit.adamw(learning_rate=kwargs.get("learning_rate", 1e-3))
    return optkit.partition({"matrix": factory(**kwargs), "other": other}, labels)


# Muon's update has the same size whatever the gradient's (an orthogonalized matrix), so the
# learning rates below set how far each leaf travels: 30 steps of 0.02 move every leaf of the
# matrices problem by 0.2 or more. float64 runs reproduce torch's bfloat16 iteration bit for bit.
# In float32, jax's and torch's gradients differ in the last bit for about a third of the
# entries; once such a difference straddles a bfloat16 rounding boundary of the Newton-Schulz
# input (about once in 2**16 entries), the two paths differ by ~1e-4 from then on. The variants
# and group overrides below stay clear of that within 30 steps (momentum=0.3 and group overrides
# lr=0.01, momentum=0.8 did not, at steps 27 and 21).
MUON = OptimizerInfo(
    name="muon",
    torch_class="Muon",
    docs_page="muon.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "no_nesterov": {"learning_rate": 0.02, "nesterov": False},
        "no_weight_decay": {"learning_rate": 0.02, "weight_decay": 0.0},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.5},
        # 0.4: the buffer's lerp weight 1 - momentum is >= 0.5, torch's other lerp formula.
        "momentum": {"learning_rate": 0.02, "momentum": 0.4},
        "original": {"learning_rate": 0.02, "adjust_lr_fn": "original"},
        "match_rms_adamw": {"learning_rate": 0.02, "adjust_lr_fn": "match_rms_adamw"},
        "ns": {
            "learning_rate": 0.02,
            "ns_coefficients": (2.0, -1.5, 0.5),
            "ns_steps": 3,
            "eps": 1e-3,
        },
        "combined": {
            "learning_rate": 0.02,
            "weight_decay": 0.3,
            "momentum": 0.8,
            "nesterov": False,
            "ns_coefficients": (3.0, -3.2, 1.2),
            "ns_steps": 7,
            "eps": 1e-5,
            "adjust_lr_fn": "match_rms_adamw",
        },
    },
    typical={"learning_rate": 0.02, "weight_decay": 1e-2},
    group_overrides={"learning_rate": 0.03, "momentum": 0.9},
    bfloat16_learning_rate=0.05,
    hyperparameters=_muon,
    runtime_changes=(
        {"momentum": 0.8, "weight_decay": 0.3},
        {"learning_rate": 0.01, "eps": 1e-3},
    ),
    problem="matrices",
    flatten=False,
    build=_muon_on_matrices,
    matrix_functions=("newton_schulz",),
)

REGISTRY: tuple[OptimizerInfo, ...] = (SGD, ADAM, ADAMW, ADAGRAD, RMSPROP, MUON)
BY_NAME: dict[str, OptimizerInfo] = {info.name: info for info in REGISTRY}
NAMES: list[str] = list(BY_NAME)
if len(BY_NAME) != len(REGISTRY):
    raise ValueError("registry names must be unique")
