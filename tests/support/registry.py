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
DrawHyperparameters = Callable[[], st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]]
"""A hypothesis strategy of ``(numeric hyperparameters, static arguments)``, learning rate
excluded. The numeric ones may be given as arrays; the static ones are passed as they are: bool
flags, structural integers (loop counts, history lengths) and choices (``line_search_fn``)."""
"""A hypothesis strategy of ``(numeric hyperparameters, static arguments)``, learning rate
excluded. The numeric ones may be given as arrays; the static ones are passed as they are: bool
flags, tuples (Adafactor's ``eps``), structural integers (loop counts, history lengths) and
choices (``line_search_fn``), and a compiled step is built per value."""
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
        runtime_changes_matter: Whether torch reads the ``runtime_changes`` after its first
            step. False for Rprop, whose lr only initializes the step sizes (its ``etas`` and
            ``step_sizes`` are tuples, fixed when built): the runtime test then checks that they
            leave torch's trajectory unchanged and optkit's still matches it.
        zero_learning_rate_overrides: Arguments under which a zero learning rate leaves the
            params unchanged, for the property test of that (Rprop clamps its step sizes to at
            least ``step_sizes[0]``, so it needs ``step_sizes=(0.0, ...)``).
        problem: The parity problem (``tests/parity/problem.py``): ``"standard"``,
            ``"matrices"`` (2-D leaves only), ``"convex"`` or ``"hinge"`` (exact zeros in the
            gradients).
        sparse_gradients: torch's side needs sparse-layout gradients (``torch.optim.SparseAdam``):
            the parity runs convert each gradient with ``to_sparse()``, which drops its exact
            zeros, so the row's ``problem`` should have some (``"hinge"``).
        closure: The update needs the loss function (``value_fn=``), as torch's
            ``step(closure)`` does; :meth:`update_args` gives a suite the extra arguments.
        flatten: Whether ``optkit.flatten`` keeps the math bit for bit (elementwise per leaf).
            When not, ``optkit.flatten`` of the optimizer must raise, unless its math already
            spans every leaf as one vector (LBFGS, which flatten hands a flat loss function).
        elementwise: Whether the math is elementwise within each leaf: every state buffer has
            its param's shape, and a step on sharded params needs no collective. Adafactor's is
            not: its row and column statistics are its param with an axis reduced to size 1
            (placed like the param on the other axes), and its norms all-reduce sharded leaves
            (never gathering them). LBFGS's is not either: its history adds a leading axis to
            each buffer, and its inner products all-reduce.
        param_groups: Whether torch takes several param groups. ``torch.optim.LBFGS`` refuses
            them (one state spans every param), and so does optkit's: no param-groups parity
            case is generated and ``group_overrides`` is unused.
        scalar_state_dtypes: State fields holding a scalar whose dtype does not follow the
            params', by field name: torch keeps some per-parameter scalars in
            ``_get_scalar_dtype()`` (float32) even for float64 params, e.g. NAdam's
            ``{"mu_product": "float32"}``. The dtype suite checks them against this instead of
            the params' dtype (the int32 update counts ``count`` need no entry).
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
    runtime_changes_matter: bool = True
    zero_learning_rate_overrides: Kwargs = dataclasses.field(default_factory=dict)
    problem: str = "standard"
    sparse_gradients: bool = False
    closure: bool = False
    flatten: bool = True
    elementwise: bool = True
    param_groups: bool = True
    scalar_state_dtypes: Mapping[str, str] = dataclasses.field(default_factory=dict)
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


@st.composite
def _asgd(draw):
    hp = {
        "lambd": draw(zero_or(1e-4, 1.0)),
        "alpha": draw(unit(0.0, 1.0)),
        "t0": draw(zero_or(1.0, 10.0)),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


@st.composite
def _rprop(draw):
    low = draw(zero_or(1e-6, 1e-3))
    hp = {
        "etas": (draw(unit(0.1, 0.9)), draw(unit(1.05, 2.0))),
        "step_sizes": (low, draw(unit(max(low, 1e-3), 50.0))),
    }
    return hp, {}


@st.composite
def _sparse_adam(draw):
    hp = {"b1": draw(zero_or(0.01, 0.99)), "b2": draw(zero_or(0.01, 0.999)), "eps": draw(EPS)}
    return hp, {}


@st.composite
def _adafactor(draw):
    hp = {
        "beta2_decay": draw(unit(-1.0, 0.0)),
        "d": draw(unit(1.0, 3.0)),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    eps = (draw(st.one_of(st.none(), unit(1e-8, 1.0))), draw(unit(0.0, 0.1)))
    return hp, {"eps": eps, "maximize": draw(st.booleans())}


@st.composite
def _nadam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
        "momentum_decay": draw(zero_or(1e-4, 0.5)),
    }
    return hp, {"decoupled_weight_decay": draw(st.booleans())}


@st.composite
def _radam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {"decoupled_weight_decay": draw(st.booleans())}


@st.composite
def _adadelta(draw):
    hp = {
        "rho": draw(unit(0.0, 1.0)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


@st.composite
def _adamax(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


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
    elementwise=False,
    param_groups=False,
)

# ASGD's averaged params (``t0``) never feed back into the params the parity suite compares;
# tests/optimizers/test_asgd.py compares them with torch's ``state[p]["ax"]``.
ASGD = OptimizerInfo(
    name="asgd",
    torch_class="ASGD",
    docs_page="asgd.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "lambd_alpha": {"learning_rate": 0.05, "lambd": 0.5, "alpha": 1.0},
        "t0": {"learning_rate": 0.05, "t0": 10.0},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "combined": {
            "learning_rate": 0.005,
            "lambd": 0.5,
            "alpha": 0.5,
            "t0": 5.0,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.3, "lambd": 1e-3, "t0": 5.0, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.02, "lambd": 0.1},
    bfloat16_learning_rate=0.1,
    hyperparameters=_asgd,
    runtime_changes=(
        {"lambd": 0.3, "alpha": 0.5, "t0": 3.0},
        {"learning_rate": 0.02, "weight_decay": 0.1},
    ),
    scalar_state_dtypes={"eta": "float32", "mu": "float32"},
)

# Rprop follows the gradient's sign: near an optimum, a float32 gradient's sign is rounding
# noise and one flip changes a step size 2.4-fold, so no variant settles onto an optimum within
# 30 steps: the smallest |gradient| whose sign is taken is 8e-5 (plain, tensor_lr) to 0.6
# (combined), over 100 times the float32 rounding of the gradients (~5e-7).
RPROP = OptimizerInfo(
    name="rprop",
    torch_class="Rprop",
    docs_page="rprop.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "etas": {"learning_rate": 0.01, "etas": (0.3, 1.1)},
        # lr above the maximum: torch clamps it at the first update.
        "step_sizes": {"learning_rate": 0.1, "step_sizes": (5e-3, 0.05)},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "combined": {
            "learning_rate": 0.005,
            "etas": (0.4, 1.15),
            "step_sizes": (1e-4, 0.1),
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.01, "etas": (0.5, 1.2), "step_sizes": (1e-6, 1.0)},
    group_overrides={"learning_rate": 0.005, "etas": (0.3, 1.1)},
    bfloat16_learning_rate=0.01,
    hyperparameters=_rprop,
    runtime_changes=({"learning_rate": 0.05}, {"learning_rate": 0.001}),
    runtime_changes_matter=False,
    zero_learning_rate_overrides={"step_sizes": (0.0, 50.0)},
)

# On the hinge problem, descent moves entries across their hinges, so the set of zero gradient
# entries changes from step to step (6-11 of tensor's, 0-6 of matrix's, 0 or 3 of vector's);
# ascent only drives entries further from them, so the maximize variants keep one set.
SPARSE_ADAM = OptimizerInfo(
    name="sparse_adam",
    torch_class="SparseAdam",
    docs_page="sparse_adam.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "betas_eps": {"learning_rate": 0.05, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined": {"learning_rate": 0.01, "b1": 0.5, "b2": 0.9, "eps": 1e-3, "maximize": True},
    },
    typical={"learning_rate": 1e-2, "b2": 0.99},
    group_overrides={"learning_rate": 0.02, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_sparse_adam,
    runtime_changes=({"b1": 0.8, "b2": 0.99}, {"eps": 1e-4, "learning_rate": 0.02}),
    problem="hinge",
    sparse_gradients=True,
)

# Clipping (RMS of the normalized update above d >= 1) bites at d = 1 in the plain variant for
# the factored leaves only now and then, as gradients shrink; it bites at every step under
# maximize, where they grow. eps1 = 1 is above the root second moment of some entries, and
# eps2 = 0.5 above the scalar leaf's RMS (tests/optimizers/test_adafactor.py checks each bites).
ADAFACTOR = OptimizerInfo(
    name="adafactor",
    torch_class="Adafactor",
    docs_page="adafactor.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "beta2_decay": {"learning_rate": 0.05, "beta2_decay": -0.5},
        "eps1": {"learning_rate": 0.05, "eps": (1.0, 1e-3)},
        "eps2": {"learning_rate": 0.05, "eps": (None, 0.5)},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.5},
        "maximize": {"learning_rate": 0.02, "maximize": True},
        "clipping_maximize": {"learning_rate": 0.02, "d": 1.05, "maximize": True},
        "combined": {
            "learning_rate": 0.05,
            "beta2_decay": -0.6,
            "eps": (0.1, 0.2),
            "d": 1.1,
            "weight_decay": 0.3,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.1, "eps": (None, 1e-2), "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.02, "beta2_decay": -0.5},
    bfloat16_learning_rate=0.3,
    hyperparameters=_adafactor,
    # beta2_decay = 0 makes the second moment the latest g^2, so clipping bites at d = 1 until d
    # is raised.
    runtime_changes=(
        {"beta2_decay": 0.0, "weight_decay": 0.1},
        {"d": 1.5, "learning_rate": 0.03},
    ),
    flatten=False,
    elementwise=False,
)

# momentum_decay=0.1 makes the schedule mu_t visibly warm up within the 30 parity steps (at the
# default 4e-3 it barely moves: 0.96**(30 * 4e-3) = 0.995).
NADAM = OptimizerInfo(
    name="nadam",
    torch_class="NAdam",
    docs_page="nadam.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "betas_eps": {"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "momentum_decay": {"learning_rate": 0.01, "momentum_decay": 0.1},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "decoupled_weight_decay": {
            "learning_rate": 0.01,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined_coupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "momentum_decay": 0.1,
            "maximize": True,
        },
        "combined_decoupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "momentum_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
    },
    typical={
        "learning_rate": 1e-2,
        "b2": 0.99,
        "weight_decay": 1e-2,
        "decoupled_weight_decay": True,
    },
    group_overrides={"learning_rate": 0.005, "momentum_decay": 0.1},
    bfloat16_learning_rate=0.1,
    hyperparameters=_nadam,
    scalar_state_dtypes={"mu_product": "float32"},
    runtime_changes=(
        {"b1": 0.8, "momentum_decay": 0.1, "weight_decay": 0.1},
        {"b2": 0.9, "eps": 1e-4, "learning_rate": 0.02},
    ),
)

# Every variant's b2 leaves the first 5 or 6 steps unrectified (SGD with momentum) and rectifies
# the rest, so both branches run in the 30 parity steps (tests/optimizers/test_radam.py checks).
RADAM = OptimizerInfo(
    name="radam",
    torch_class="RAdam",
    docs_page="radam.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "betas_eps": {"learning_rate": 0.02, "b1": 0.8, "b2": 0.9, "eps": 1e-4},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.1},
        "decoupled_weight_decay": {
            "learning_rate": 0.02,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined_coupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.8,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "maximize": True,
        },
        "combined_decoupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
    },
    typical={"learning_rate": 3e-2, "b2": 0.99, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "b2": 0.9},
    bfloat16_learning_rate=0.1,
    hyperparameters=_radam,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.9, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 0.02},
    ),
)

# Adadelta's steps start at sqrt(eps / (1 - rho)) (about 0.003 at the defaults) and grow as the
# average of past steps does: the default learning rate of 1 moves the parity leaves only ~0.1
# in 30 steps, so most variants use 10 or a larger eps. rho = 1 (allowed, as in torch) freezes
# both averages at zero: the step is then the gradient itself, plain SGD.
ADADELTA = OptimizerInfo(
    name="adadelta",
    torch_class="Adadelta",
    docs_page="adadelta.md",
    variants={
        "plain": {"learning_rate": 10.0},
        "rho_eps": {"learning_rate": 1.0, "rho": 0.8, "eps": 1e-4},
        "rho_one": {"learning_rate": 0.05, "rho": 1.0},
        "weight_decay": {"learning_rate": 10.0, "weight_decay": 0.1},
        "maximize": {"learning_rate": 3.0, "maximize": True},
        "combined": {
            "learning_rate": 0.5,
            "rho": 0.8,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1.0, "rho": 0.9, "eps": 1e-3, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 3.0, "rho": 0.8},
    bfloat16_learning_rate=1.0,
    hyperparameters=_adadelta,
    runtime_changes=(
        {"rho": 0.8, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 5.0},
    ),
)

# Adamax's eps is added to |g| inside the maximum: "eps_in_max" makes it larger than most
# gradient entries late in the run, with a short-memory norm (b2 = 0.5), so adding it anywhere
# else would show; its b1 < 0.5 takes torch's other lerp formula.
ADAMAX = OptimizerInfo(
    name="adamax",
    torch_class="Adamax",
    docs_page="adamax.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "betas_eps": {"learning_rate": 0.02, "b1": 0.8, "b2": 0.9, "eps": 1e-3},
        "eps_in_max": {"learning_rate": 0.05, "b1": 0.3, "b2": 0.5, "eps": 0.5},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined": {
            "learning_rate": 0.02,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-3,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 2e-2, "b2": 0.99, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adamax,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.99, "weight_decay": 0.1},
        {"eps": 1e-2, "learning_rate": 0.01},
    ),
)

REGISTRY: tuple[OptimizerInfo, ...] = (
    SGD,
    ADAM,
    ADAMW,
    ADAGRAD,
    RMSPROP,
    ADADELTA,
    ADAMAX,
    NADAM,
    RADAM,
    ADAFACTOR,
    ASGD,
    RPROP,
    SPARSE_ADAM,
    LBFGS,
    MUON,
)
BY_NAME: dict[str, OptimizerInfo] = {info.name: info for info in REGISTRY}
NAMES: list[str] = list(BY_NAME)
if len(BY_NAME) != len(REGISTRY):
    raise ValueError("registry names must be unique")
