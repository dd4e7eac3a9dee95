"""What a registry row holds: :class:`OptimizerInfo`, and the helpers rows are written with.

Rows live one module per algorithm under ``tests/support/rows/``; ``tests/support/registry.py``
collects them. Rows use optkit's argument names; :func:`to_torch_kwargs` derives torch's (``lr``,
``betas``). torch is named by class name only, so rows import without torch.
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
flags, tuples (Adafactor's ``eps``), structural integers (loop counts, history lengths) and
choices (``line_search_fn``), and a compiled step is built per value."""


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
