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

from hypothesis import strategies as st

import optkit

Kwargs = Mapping[str, Any]
DrawHyperparameters = Callable[[], st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]]
"""A hypothesis strategy of ``(numeric hyperparameters, static arguments)``, learning rate
excluded. The numeric ones may be given as arrays; the static ones are passed as they are: bool
flags, structural integers (loop counts, history lengths) and choices (``line_search_fn``)."""


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
            ``step(closure)`` does; :meth:`update_args` gives a suite the extra arguments.
        flatten: Whether the math is elementwise per leaf, so ``optkit.flatten`` keeps it bit
            for bit and, on sharded params, the update alone needs no collectives. (LBFGS's
            inner products span every leaf.)
        param_groups: Whether torch takes several param groups. ``torch.optim.LBFGS`` refuses
            them (one state spans every param), and so does optkit's: no param-groups parity
            case is generated and ``group_overrides`` is unused.
        build: How :meth:`make` builds the optimizer for any parameter tree from the factory and
            keyword arguments. The generic suites' trees have leaves of several ranks; an
            optimizer of matrices (Muon) is built inside ``optkit.partition`` with another
            optimizer for the other leaves, as a user would.
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
    param_groups: bool = True
    build: Callable[
        [Callable[..., optkit.GradientTransformation], Kwargs], optkit.GradientTransformation
    ] = lambda factory, kwargs: factory(**kwargs)

    @property
    def factory(self) -> Callable[..., optkit.GradientTransformation]:
        return getattr(optkit, self.name)

    def make(self, **overrides: Any) -> optkit.GradientTransformation:
        """The typical set-up, with ``overrides`` applied, built for any parameter tree."""
        return self.build(self.factory, {**self.typical, **overrides})

    def update_args(self, loss_fn: Callable[[Any], Any]) -> dict[str, Any]:
        """The extra keyword arguments of ``update`` for a run minimizing ``loss_fn`` (a function
        of the params): ``{"value_fn": loss_fn}`` for a closure-driven optimizer, else none."""
        return {"value_fn": loss_fn} if self.closure else {}

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


@st.composite
def _lbfgs(draw):
    hp = {
        "tolerance_grad": draw(zero_or(1e-6, 1e-2)),
        "tolerance_change": draw(zero_or(1e-9, 1e-4)),
    }
    # A few structures only: each compiles its own program.
    static = {
        "max_iter": draw(st.sampled_from([1, 4])),
        "history_size": draw(st.sampled_from([2, 10])),
        "line_search_fn": draw(st.sampled_from([None, "strong_wolfe"])),
    }
    return hp, static


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

# LBFGS runs the convex problem, to convergence within a few updates. In float32 the loss is
# flat to its last bit while the params are still ~1e-4 from the minimum, so where an
# iteration stops on a loss change below the default tolerance_change (1e-9: only an exact 0
# qualifies), or which step a line search picks there, is decided by rounding, in torch as here;
# a fixed step shorter than about half of the Newton step leaves gradient differences that lose
# digits to cancellation, and the history amplifies them. The variants therefore stop on
# tolerances above that noise (tolerance_grad 1e-2 stops an update, and every later one at
# once, a few 1e-3 from the minimum) and use learning rates of 0.5 or more for fixed steps;
# tests/optimizers/test_lbfgs.py compares torch's defaults and smaller learning rates in float64.
LBFGS = OptimizerInfo(
    name="lbfgs",
    torch_class="LBFGS",
    docs_page="lbfgs.md",
    variants={
        "learning_rate": {"learning_rate": 0.5, "tolerance_grad": 1e-2},
        "tolerance_grad": {"learning_rate": 1.0, "tolerance_grad": 1e-2},
        "tolerance_change": {"learning_rate": 1.0, "tolerance_change": 1e-4},
        # Two pairs kept, about ten made: the ring buffer wraps.
        "history_wraps": {
            "learning_rate": 0.7,
            "max_iter": 4,
            "history_size": 2,
            "tolerance_grad": 1e-2,
        },
        # The history and the last step carry over from update to update.
        "one_iteration": {
            "learning_rate": 1.0,
            "max_iter": 1,
            "history_size": 3,
            "tolerance_grad": 1e-2,
        },
        "max_eval": {
            "learning_rate": 0.8,
            "max_iter": 10,
            "max_eval": 4,
            "tolerance_grad": 1e-2,
        },
        "strong_wolfe": {
            "learning_rate": 1.0,
            "line_search_fn": "strong_wolfe",
            "tolerance_grad": 1e-2,
        },
        # A first step far too short: the search extrapolates, and runs out of evaluations.
        "strong_wolfe_extrapolates": {
            "learning_rate": 0.1,
            "line_search_fn": "strong_wolfe",
            "max_iter": 2,
            "tolerance_grad": 1e-2,
        },
        # A first step far too long: the search zooms into a bracket.
        "strong_wolfe_zooms": {
            "learning_rate": 4.0,
            "line_search_fn": "strong_wolfe",
            "max_iter": 3,
            "history_size": 2,
            "tolerance_change": 1e-4,
        },
        # max_eval cuts a search short.
        "strong_wolfe_max_eval": {
            "learning_rate": 3.0,
            "line_search_fn": "strong_wolfe",
            "max_iter": 10,
            "max_eval": 5,
            "tolerance_grad": 1e-2,
        },
    },
    typical={
        "learning_rate": 1.0,
        "max_iter": 2,
        "history_size": 10,
        "line_search_fn": "strong_wolfe",
    },
    group_overrides={},
    bfloat16_learning_rate=1.0,
    hyperparameters=_lbfgs,
    runtime_changes=(
        {"learning_rate": 0.3, "tolerance_change": 1e-6},
        {"tolerance_grad": 1e-3, "learning_rate": 0.8},
    ),
    problem="convex",
    closure=True,
    flatten=False,
    param_groups=False,
)

REGISTRY: tuple[OptimizerInfo, ...] = (SGD, ADAM, ADAMW, ADAGRAD, RMSPROP, LBFGS)
BY_NAME: dict[str, OptimizerInfo] = {info.name: info for info in REGISTRY}
NAMES: list[str] = list(BY_NAME)
if len(BY_NAME) != len(REGISTRY):
    raise ValueError("registry names must be unique")
