"""Hyperparameters held in the optimizer state, so changing them never recompiles.

The JAX counterpart of torch's ``for g in opt.param_groups: g["lr"] = x``: an optimizer built with
:func:`inject_hyperparams` keeps its numeric hyperparameters as arrays in its state, and
:func:`set_hyperparams` returns a state with new values. A jitted step compiled once keeps working
for every value.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _arguments, _numerics, _state, _tree, _validation
from optkit._base import (
    DescribedTransformation,
    GradientTransformation,
    OptimizerDescription,
    OptState,
    Params,
    Updates,
    description_of,
    is_elementwise,
)
from optkit.combinators.param_groups import ParamGroupsState


class InjectHyperparamsState(NamedTuple):
    """Update count, the settable numeric hyperparameters, the latest schedule outputs, and the
    wrapped optimizer's state."""

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    scheduled: dict[str, jax.Array]
    inner_state: OptState


def _is_numeric(value: Any) -> bool:
    """A number to inject: a Python or NumPy real number, or a floating JAX/NumPy array. Arrays
    of other dtypes (PRNG keys, integer arrays) and bools are passed through as they are."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, np.ndarray | jax.Array):
        return jnp.issubdtype(value.dtype, jnp.floating)
    return isinstance(value, numbers.Real | np.generic) and not isinstance(value, np.bool_)


def _as_array(name: str, value: Any, dtype: Any = None) -> jax.Array:
    """A strongly typed float scalar, so values set later never change the jitted signature:
    in ``dtype`` when given (``hyperparam_dtype``), else the value's own float dtype (JAX's
    default float for a Python or integer number)."""
    array = jnp.asarray(value)
    if array.ndim != 0:
        raise ValueError(f"hyperparameter {name} must be a scalar, got shape {array.shape}.")
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"hyperparameter {name} must be a real number, got dtype {array.dtype}.")
    if dtype is None:
        dtype = array.dtype if jnp.issubdtype(array.dtype, jnp.floating) else jnp.result_type(float)
    return array.astype(dtype)


def _check_schedule(name: str, schedule: Callable[[jax.Array], Any]) -> jax.Array:
    """Check a schedule at count 0 (:func:`optkit._validation.schedule`) and return that value
    as a concrete float scalar: the optimizer is then built once with it, so its own checks run
    on a number. A callable that is not a schedule gets a hint towards ``static_args``."""
    try:
        first = _validation.schedule(name, schedule)
    except TypeError as error:
        raise TypeError(f"{error} If it is not a schedule, pass static_args=({name!r},).") from (
            error.__cause__ or error
        )
    return _as_array(name, schedule(_numerics.zero_count()) if first is None else first)


def _check_rounded(numeric: dict[str, Any], dtype: Any) -> None:
    """Range-check each value as rounded to ``hyperparam_dtype``: ``b2=0.999`` is 1.0 in
    bfloat16, which Adam refuses."""
    for name, value in numeric.items():
        if name in _validation.RANGES:
            rounded = _as_array(name, value, dtype)
            try:
                _validation.hyperparameters(**{name: rounded})
            except ValueError as error:
                raise ValueError(
                    f"{name}={value!r} is {float(rounded)!r} in hyperparam_dtype {dtype}: {error}"
                ) from None


def _static_names(factory: Callable[..., Any], static_args: str | Iterable[str]) -> frozenset[str]:
    """``static_args`` as a set of names, each one a parameter of ``factory``."""
    names = frozenset([static_args] if isinstance(static_args, str) else static_args)
    unknown = _arguments.unknown_names(factory, sorted(names))
    if unknown:
        reasons = "; ".join(f"{name!r}: {why}" for name, why in unknown.items())
        raise ValueError(
            f"inject_hyperparams: static_args names {sorted(unknown)}, which "
            f"{getattr(factory, '__name__', 'the factory')} does not take ({reasons})."
        )
    return names


# Arguments whose Python zero removes a step from the optimizer when it is built: no momentum
# buffer, no weight-decay transform in the chain, no Adagrad learning-rate decay count.
_SWITCHES = frozenset({"momentum", "weight_decay", "lr_decay"})


def _switches_off(name: str, value: Any) -> bool:
    """A Python zero default of an argument in :data:`_SWITCHES` (``momentum=0.0``)."""
    return (
        name in _SWITCHES
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == 0
    )


def _bound_arguments(
    factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], frozenset[str]]:
    """Every argument of the call by name, defaults included, and the names given explicitly.

    A factory without an inspectable signature takes keywords only.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        if args:
            raise TypeError(
                "inject_hyperparams: this factory has no inspectable signature; pass its "
                "arguments by keyword."
            ) from None
        return dict(kwargs), frozenset(kwargs)
    bound = signature.bind(*args, **kwargs)
    given = frozenset(bound.arguments)
    bound.apply_defaults()
    arguments = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
            given |= frozenset(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(
                    f"inject_hyperparams: {name} takes extra positional arguments, which cannot "
                    "be injected by name."
                )
        else:
            arguments[name] = value
    return arguments, given


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so its numeric hyperparameters live in the state.

    ``inject_hyperparams(optkit.adamw)(learning_rate=1e-3, weight_decay=0.1)`` behaves as
    ``optkit.adamw(learning_rate=1e-3, weight_decay=0.1)``, but its numeric hyperparameters are
    arrays in the state: read them with :func:`get_hyperparams` (or optax's
    ``optax.tree_utils.tree_get``), change them with :func:`set_hyperparams` (or
    ``tree_set``), without recompiling a jitted step. The returned function takes the factory's
    arguments, positionally or by name, and sorts every one of them, defaults included (as
    optax's ``inject_hyperparams`` does), into three kinds:

    - numeric (Python numbers, NumPy scalars, floating JAX/NumPy scalars): stored in
      ``state.hyperparams`` as floats, in ``hyperparam_dtype`` when given, else in the value's
      float dtype (JAX's default float for a Python number). Defaults count:
      ``inject_hyperparams(optkit.adam)(0.1)`` holds ``b1``, ``b2`` and ``eps`` too, so each
      can be set later, as any key of a torch param group. A zero default of ``momentum``,
      ``weight_decay`` or ``lr_decay``, which removes a step from the optimizer when it is
      built (no momentum buffer, no decay transform), is held only when given, so the injected
      optimizer has the plain one's structure (as optax's tests require); pass
      ``momentum=0.0`` to be able to raise it;
    - callables given explicitly: schedules of the 0-based update count, for any numeric
      hyperparameter (``learning_rate``, ``momentum``, ``dampening``, ``b1``, ``b2``, ``eps``,
      ``weight_decay``, ...), evaluated before each update, their outputs stored in
      ``state.scheduled``;
    - bools, strings, ``None``, tuples, arrays that are not floating (PRNG keys, integer
      arrays), arguments that fix the optimizer's structure (a loop count, a history length,
      ``clip_by_global_norm``'s ``norm_type``) and names listed in ``static_args``: passed
      through unchanged (use ``static_args`` for a callable that is not a schedule, such as
      adamw's ``mask``, or to keep a number a Python constant). :func:`set_hyperparams` refuses
      structural names.

    A schedule is torch's ``optimizer.param_groups[0][name] = schedule(step)`` before each
    ``optimizer.step()``; ``momentum=`` (SGD, RMSprop) or ``b1=`` (Adam family) driven by
    :func:`optkit.schedules.one_cycle_momentum` or :func:`optkit.schedules.cyclic_momentum` is
    the momentum cycling of torch's ``OneCycleLR`` and ``CyclicLR`` (``cycle_momentum=True``).

    Construction checks each schedule once, at count 0: it must return a real scalar, in its
    hyperparameter's range (the same table as plain values), and the optimizer is built with that
    value. Later values are traced under ``jit`` and not checked: keep a schedule in range (e.g.
    ``b1 < 1``) over the whole run.

    A hyperparameter held here (numeric or scheduled) is a run-time value, so the optimizer's
    build-time decisions never depend on it: it is never pruned from the chain, even at zero
    (``momentum=0.0`` keeps a momentum buffer so that it can be raised later, and so does a
    momentum schedule), and where its value matters at a step torch's rules apply at that step:
    a step at momentum 0 uses no buffer (with ``nesterov=True`` it is plain SGD, as torch's step
    is), the first step with a non-zero momentum starts the buffer from the gradient.
    ``nesterov=True`` is checked against a Python momentum and dampening only, as torch checks
    the values given to its constructor. Zero defaults are not held (see above), so an
    injected ``sgd(0.1)`` has the plain one's state; ``sgd(0.1, momentum=0.0)`` injected keeps a
    momentum buffer so the momentum can be raised later.

    Args:
        factory: A function returning a gradient transformation (an optkit or optax optimizer
            or primitive).
        static_args: A name, or names, of ``factory``'s parameters passed through unchanged,
            never injected. A name the factory does not take is a ValueError.
        hyperparam_dtype: The floating dtype of every injected value and schedule output
            (optax's argument). A value that rounds out of its range in it (``b2=0.999`` is 1.0
            in bfloat16) is a ValueError at construction.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> tx = optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1, momentum=0.9)
        >>> params = jnp.ones(2)
        >>> state = tx.init(params)
        >>> state = optkit.set_hyperparams(state, learning_rate=0.01)
        >>> optkit.get_hyperparams(state)["learning_rate"]
        Array(0.01, dtype=float32)

        torch's ``OneCycleLR`` on AdamW cycles ``beta1`` as well as the learning rate:

        >>> from optkit import schedules
        >>> tx = optkit.inject_hyperparams(optkit.adamw)(
        ...     learning_rate=schedules.one_cycle_lr(1e-3, total_steps=100),
        ...     b1=schedules.one_cycle_momentum(total_steps=100),
        ... )
        >>> state = tx.init(params)
        >>> for _ in range(30):
        ...     updates, state = tx.update(jnp.ones(2), state, params)
        >>> print(f"{optkit.get_hyperparams(state)['b1']:.3f}")
        0.850

        Positional arguments, and the defaults held too, found by optax's tree tools (adam's
        ``weight_decay=0.0`` default removes its decay step, so it is held only when given):

        >>> import optax
        >>> state = optkit.inject_hyperparams(optkit.adam)(0.1).init(params)
        >>> state = optax.tree_utils.tree_set(state, b2=0.99)
        >>> sorted(optkit.get_hyperparams(state))
        ['b1', 'b2', 'eps', 'learning_rate']

    Raises:
        ValueError: if ``static_args`` names a parameter ``factory`` does not take; when the
            optimizer is built, if a value or a schedule's value at count 0 is out of range.
        TypeError: when the optimizer is built, if a schedule fails on the count 0 or returns
            something other than a real scalar (a bool, a complex number); at trace time, a
            schedule's own error, chained, names the argument it was given as.
    """
    static_names = _static_names(factory, static_args)
    if hyperparam_dtype is not None:
        hyperparam_dtype = jnp.dtype(hyperparam_dtype)
        if not jnp.issubdtype(hyperparam_dtype, jnp.floating):
            raise TypeError(
                f"inject_hyperparams: hyperparam_dtype must be a floating dtype, got "
                f"{hyperparam_dtype}."
            )

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        arguments, given = _bound_arguments(factory, args, kwargs)
        static = {}
        numeric = {}
        schedules = {}
        for name, value in arguments.items():
            if name in static_names or _validation.is_structural(name):
                static[name] = value
            elif callable(value) and name in given:
                schedules[name] = value
            elif name not in given and _switches_off(name, value):
                # A zero default turns its step off when the optimizer is built (torch keeps no
                # momentum buffer and no decay step at 0): held in the state it would add them.
                # Held only when given, so an injected optimizer has the plain one's structure.
                static[name] = value
            elif _is_numeric(value):
                numeric[name] = value
            else:
                static[name] = value
        # Build once, each schedule replaced by its value at count 0, so bad hyperparameters
        # fail here, not at the first step. A schedule reaches the optimizer as an array, as in
        # `make` below: a value that can change, never a static zero pruned from the chain.
        first = {name: _check_schedule(name, schedule) for name, schedule in schedules.items()}
        if hyperparam_dtype is not None:
            _check_rounded(numeric, hyperparam_dtype)
        built = factory(**static, **numeric, **first)
        # The result also says which torch optimizer this is (the state holds the live values);
        # its description names the schedules themselves, which an export evaluates.
        description = description_of(built)
        if isinstance(description, OptimizerDescription) and schedules:
            arguments = {**description.arguments, **schedules}
            description = dataclasses.replace(
                description, arguments=types.MappingProxyType(arguments)
            )

        def make(hyperparams: dict[str, Any], scheduled: dict[str, Any]) -> GradientTransformation:
            return factory(**static, **hyperparams, **scheduled)

        def evaluate(count: jax.Array) -> dict[str, jax.Array]:
            return {
                name: _as_array(name, _validation.call_schedule(name, fn, count), hyperparam_dtype)
                for name, fn in schedules.items()
            }

        def init(params: Params) -> InjectHyperparamsState:
            count = _numerics.zero_count(params)
            hyperparams = _tree.place_scalars(
                {name: _as_array(name, value, hyperparam_dtype) for name, value in numeric.items()},
                params,
            )
            scheduled = _tree.place_scalars(evaluate(_numerics.zero_count()), params)
            return InjectHyperparamsState(
                count=count,
                hyperparams=hyperparams,
                scheduled=scheduled,
                inner_state=make(hyperparams, scheduled).init(params),
            )

        def update(
            updates: Updates,
            state: InjectHyperparamsState,
            params: Params | None = None,
            **extra_args: Any,
        ) -> tuple[Updates, InjectHyperparamsState]:
            scheduled = evaluate(state.count)
            # Values written into the state by other tools (optax.tree_utils.tree_set writes
            # Python numbers) are arrays here, so a zero never prunes a transform.
            hyperparams = {
                name: value if isinstance(value, jax.Array) else _as_array(name, value)
                for name, value in state.hyperparams.items()
            }
            updates, inner_state = make(hyperparams, scheduled).update(
                updates, state.inner_state, params, **extra_args
            )
            return updates, InjectHyperparamsState(
                count=_numerics.increment(state.count),
                hyperparams=hyperparams,
                scheduled=scheduled,
                inner_state=inner_state,
            )

        where = f"inject_hyperparams({getattr(factory, '__name__', 'factory')}) update"
        return DescribedTransformation(
            init,
            _state.checking_state(init, update, where),
            description,
            elementwise=is_elementwise(built),
        )

    return build


def _is_injected(node: Any) -> bool:
    return isinstance(node, InjectHyperparamsState)


def _is_groups(node: Any) -> bool:
    return isinstance(node, ParamGroupsState)


def _injected_states(state: OptState) -> list[InjectHyperparamsState]:
    return [s for s in jax.tree.leaves(state, is_leaf=_is_injected) if _is_injected(s)]


def _select_group(state: OptState, group: int | None) -> OptState:
    if group is None:
        return state
    found = [s for s in jax.tree.leaves(state, is_leaf=_is_groups) if _is_groups(s)]
    if not found:
        raise ValueError("group= was given, but the state holds no param_groups state.")
    groups = found[0].groups
    if not 0 <= group < len(groups):
        raise ValueError(f"group must be in [0, {len(groups)}), got {group}.")
    return groups[group]


def _placed_like(value: Any, old: Any) -> Any:
    """``value`` in the dtype and placement of the value it replaces.

    Keeping a committed (e.g. replicated) placement, and any wrapper around the array such as
    Flax nnx's ``OptArray``, means a jitted step sees the same input and does not recompile.
    """

    def place(leaf: Any) -> jax.Array:
        if not hasattr(leaf, "dtype"):  # a Python number written by another tool
            return _as_array("value", value)
        new = jnp.asarray(value, dtype=leaf.dtype)
        return jax.device_put(new, leaf.sharding) if _tree.is_committed(leaf) else new

    return jax.tree.map(place, old)


def _check_stored(name: str, value: Any, stored: Any) -> None:
    """Range-check a value as stored, in the state's dtype: 0.9999 is 1.0 in bfloat16, which a
    ``b2`` must not reach."""
    if (
        name not in _validation.RANGES
        or not isinstance(stored, jax.Array)  # e.g. inside a Flax nnx wrapper: checked as given
        or isinstance(stored, jax.core.Tracer)
    ):
        return
    try:
        _validation.hyperparameters(**{name: stored})
    except ValueError as error:
        raise ValueError(
            f"{name}={value!r} is {float(stored)!r} in the state's {stored.dtype}: {error}"
        ) from None


def get_hyperparams(state: OptState, *, group: int | None = None) -> dict[str, jax.Array]:
    """The current hyperparameters of the injected optimizer in ``state``.

    Schedule-driven ones hold the value the latest update used. With param groups, pass
    ``group=i`` for the i-th group's values (torch's ``optimizer.param_groups[i]``).

    Raises:
        ValueError: if ``state`` holds no injected optimizer, or several and no ``group``.
    """
    found = _injected_states(_select_group(state, group))
    if not found:
        raise ValueError(
            "the state holds no injected hyperparameters: build the optimizer with "
            "optkit.inject_hyperparams(factory)(...)."
        )
    if len(found) > 1:
        raise ValueError(
            f"the state holds {len(found)} injected optimizers (e.g. param groups): pass group=i."
        )
    return {**found[0].hyperparams, **found[0].scheduled}


def set_hyperparams(state: OptState, *, group: int | None = None, **values: Any) -> OptState:
    """Return ``state`` with injected hyperparameters replaced, wherever they live.

    Every injected optimizer in ``state`` (inside chains, masks, param groups) that has a
    hyperparameter of a given name gets the new value, cast to the stored dtype; with
    ``group=i`` only the i-th param group's. A jitted update compiled before keeps working
    without recompiling.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.param_groups(
        ...     optkit.inject_hyperparams(optkit.sgd),
        ...     [{"params": "w"}, {"params": "b", "learning_rate": 0.0}],
        ...     learning_rate=0.1,
        ... )
        >>> state = tx.init({"w": jnp.ones(2), "b": jnp.ones(1)})
        >>> state = optkit.set_hyperparams(state, group=0, learning_rate=0.05)
        >>> [f"{optkit.get_hyperparams(state, group=g)['learning_rate']:.3g}" for g in (0, 1)]
        ['0.05', '0']

    Raises:
        ValueError: if a name is not an injected hyperparameter anywhere in the state, is
            driven by a schedule, fixes the structure (``norm_type``, loop counts), or a value
            is out of its range or not a scalar.
    """
    for name, value in values.items():
        if name in _validation.RANGES:
            _validation.hyperparameters(**{name: value})
        _as_array(name, value)

    target = _select_group(state, group)
    found = _injected_states(target)
    settable = set().union(*(s.hyperparams for s in found)) if found else set()
    scheduled = set().union(*(s.scheduled for s in found)) if found else set()
    for name in values:
        if _validation.is_structural(name):
            raise ValueError(
                f"{name} fixes the transform's structure, so inject_hyperparams keeps it static "
                f"and it cannot be set: build the optimizer again with the new {name}."
            )
        if name in scheduled:
            raise ValueError(f"{name} is driven by a schedule; it cannot be set.")
        if name not in settable:
            hint = f" ({_arguments.hint(name, sorted(settable))})" if settable else ""
            raise ValueError(
                f"no injected hyperparameter named {name!r} in the state{hint}; "
                f"settable: {sorted(settable) or 'none (use optkit.inject_hyperparams)'}. "
                "A momentum or weight_decay left at its zero default is not "
                f"held, since zero switches its step off: pass {name}=0.0 to the injected "
                "optimizer to make it settable."
            )

    def replace(node: Any) -> Any:
        if not _is_injected(node):
            return node
        hyperparams = {
            name: _placed_like(values[name], old) if name in values else old
            for name, old in node.hyperparams.items()
        }
        for name in values.keys() & hyperparams.keys():
            _check_stored(name, values[name], hyperparams[name])
        return node._replace(hyperparams=hyperparams)

    def replace_all(tree: OptState) -> OptState:
        return jax.tree.map(replace, tree, is_leaf=_is_injected)

    if group is None:
        return replace_all(state)

    def replace_group(node: Any) -> Any:
        if not _is_groups(node):
            return node
        groups = list(node.groups)
        groups[group] = replace_all(groups[group])
        return node._replace(groups=tuple(groups))

    return jax.tree.map(replace_group, state, is_leaf=_is_groups)
