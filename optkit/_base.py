"""The gradient-transformation protocol: ``(init, update)`` pairs, ``chain`` and ``apply_updates``.

optkit speaks the same structural protocol as optax, so transforms of either library compose with
the other's ``chain`` and drop into Flax's ``TrainState`` and ``nnx.Optimizer``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from optkit import _tree
from optkit._kernel import leaf_kernel

Params = Any
"""A pytree of arrays: the parameters being optimized."""
Updates = Any
"""A pytree of arrays shaped like the params: gradients going in, deltas to add coming out."""
OptState = Any
"""A pytree of arrays holding a transform's state."""
Schedule = Callable[[jax.Array], jax.typing.ArrayLike]
"""A function of the 0-based update count returning a scalar (e.g. a learning rate)."""
Scalar = float | jax.typing.ArrayLike
"""A hyperparameter: a Python number or a JAX/NumPy scalar."""
ScalarOrSchedule = Scalar | Schedule
"""A hyperparameter that may also be a schedule of the update count."""


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure optimizer component: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra_args) -> (updates, new_state)``.

    ``update`` maps incoming updates (gradients, or the output of the previous transform) to new
    updates, which are deltas to *add* to the params (see :func:`apply_updates`). Extra keyword
    arguments (e.g. ``value=loss``) are forwarded by :func:`chain` to every transform; transforms
    that do not use them ignore them.
    """

    init: TransformInitFn
    update: TransformUpdateFn


@dataclasses.dataclass(frozen=True)
class OptimizerDescription:
    """Which ``torch.optim`` class an optimizer reproduces, and what it was built with.

    Attributes:
        torch_class: The class name in ``torch.optim`` (``"AdamW"``).
        arguments: Every argument of the optkit factory by its optkit name, defaults included,
            as given (numbers, arrays, schedules, flags), in a read-only mapping.
    """

    torch_class: str
    arguments: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ParamGroupsDescription:
    """An :func:`optkit.param_groups` optimizer: each group's description (``None`` for a group
    whose optimizer has none), and ``group_of(tree)``, the group index of every leaf of a tree
    (in :func:`optkit._tree.leaves_with_paths` order)."""

    groups: tuple[OptimizerDescription | None, ...]
    group_of: Callable[[Any], list[int]]


Description = OptimizerDescription | ParamGroupsDescription


class DescribedTransformation(GradientTransformation):
    """A :class:`GradientTransformation` that also describes itself (read-only ``description``).

    optkit's torch-named optimizers, :func:`optkit.inject_hyperparams` and
    :func:`optkit.param_groups` return one, so that code such as
    :func:`optkit.to_torch_state_dict` can read the torch class and hyperparameters an optimizer
    stands for. It is still the NamedTuple ``(init, update)``: it unpacks, compares and hashes as
    one, and optax, Flax and ``jax.jit`` see no difference. ``_replace`` returns an undescribed
    transformation (``description`` is ``None``): the new functions may no longer match it.

    Examples:
        >>> import optkit
        >>> tx = optkit.adamw(learning_rate=1e-3)
        >>> tx.description.torch_class, tx.description.arguments["weight_decay"]
        ('AdamW', 0.01)
        >>> init, update = tx  # still the (init, update) pair
    """

    def __new__(
        cls,
        init: TransformInitFn,
        update: TransformUpdateFn,
        description: Description | None = None,
        *,
        elementwise: bool = False,
    ) -> DescribedTransformation:
        transform = super().__new__(cls, init, update)
        transform.__dict__["_description"] = description
        transform.__dict__["_elementwise"] = bool(elementwise)
        return transform

    @property
    def description(self) -> Description | None:
        """What this transformation stands for, or ``None``."""
        return self.__dict__.get("_description")

    @property
    def elementwise(self) -> bool:
        """Whether each leaf's update depends only on that leaf's gradient, param and state
        buffers (all of the param's shape) and on the state's scalars, element by element.

        Such an optimizer gives the same values when it runs on any pieces of the leaves, one
        piece at a time: :func:`optkit.quantize_state` relies on this to update its quantized
        buffers chunk by chunk. optkit's torch-named optimizers say so where it holds (not
        :func:`optkit.adafactor`, :func:`optkit.muon` or :func:`optkit.lbfgs`, nor an AdamW
        whose ``mask`` is a tree); other transforms, chains included, say ``False``.
        """
        return self.__dict__.get("_elementwise", False)


def is_elementwise(transform: Any) -> bool:
    """``transform.elementwise`` for a :class:`DescribedTransformation`, else ``False``."""
    return isinstance(transform, DescribedTransformation) and transform.elementwise


def description_of(transform: Any) -> Description | None:
    """The description a transformation carries, or ``None`` (optax's, chains, other wrappers)."""
    return transform.description if isinstance(transform, DescribedTransformation) else None


class EmptyState(NamedTuple):
    """The state of a stateless transform: a pytree with no leaves."""


def identity() -> GradientTransformation:
    """Pass updates through unchanged.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.identity()
        >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
        Array([1., 1.], dtype=float32)
    """

    return stateless(lambda updates, params: updates)


def takes_extra_args(transform: Any) -> bool:
    """Whether ``transform.update`` accepts ``**extra_args``.

    optkit's own transforms always do; optax's plain ``GradientTransformation`` does not, and
    passing it keywords would raise, so :func:`chain` checks once when it is built.
    """
    if isinstance(transform, GradientTransformation):
        return True
    if any(cls.__name__ == "GradientTransformationExtraArgs" for cls in type(transform).__mro__):
        return True
    try:
        parameters = inspect.signature(transform.update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_transform(transform: Any, where: str, position: int) -> None:
    """Fail with a clear message unless ``transform`` has callable ``init`` and ``update``."""
    if not (
        callable(getattr(transform, "init", None)) and callable(getattr(transform, "update", None))
    ):
        raise TypeError(
            f"{where}: argument {position} is {type(transform).__name__!r}, expected a gradient "
            "transformation with callable `init` and `update` (an optkit or optax transform). "
            "Did you pass an optimizer factory such as `optkit.adam` without calling it?"
        )


def chain(*transforms: Any) -> GradientTransformation:
    """Apply transforms one after another; the state is the tuple of their states.

    ``params`` and any extra keyword arguments of ``update`` are forwarded to every transform that
    accepts them. optax transforms are accepted too.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.chain(optkit.clip(1.0), optkit.scale_by_learning_rate(0.1))
        >>> state = tx.init(jnp.zeros(3))
        >>> tx.update(jnp.array([0.5, 2.0, -3.0]), state)[0]
        Array([-0.05, -0.1 ,  0.1 ], dtype=float32)
    """
    for position, transform in enumerate(transforms):
        check_transform(transform, "chain", position)
    forwards_extra = tuple(takes_extra_args(t) for t in transforms)

    def init(params: Params) -> tuple[OptState, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(
        updates: Updates,
        state: tuple[OptState, ...],
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, tuple[OptState, ...]]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = (
                f"a {type(state).__name__} of length {len(state)}"
                if isinstance(state, tuple)
                else (type(state).__name__)
            )
            raise ValueError(
                f"chain: state must be a tuple of {len(transforms)} states (one per transform), "
                f"got {got}. Was it made by this chain's init?"
            )
        new_state = []
        for transform, inner_state, forward in zip(transforms, state, forwards_extra, strict=True):
            if forward:
                updates, inner_state = transform.update(updates, inner_state, params, **extra_args)
            else:
                updates, inner_state = transform.update(updates, inner_state, params)
            new_state.append(inner_state)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, leaf by leaf.

    Each sum is computed in the promoted dtype of the two leaves and cast back to the param's
    dtype, so bfloat16 params with float32 updates stay bfloat16. As in optax, ``None`` leaves
    in ``params`` (e.g. frozen entries) stay ``None``, whatever their update; a ``None`` update
    (no update for that leaf, as :func:`add_decayed_weights` passes one through) leaves its
    param as it is. Python float params become 0-d arrays.

    Raises:
        ValueError: if the two trees differ in structure or a leaf's shape, or a complex update
            meets a real param; the message names the path.
    """
    params = _tree.as_arrays(params)
    updates = _tree.as_arrays(updates)
    rows = _tree.matched_rows(params, updates, "apply_updates", "params", "updates")
    for path, param, update in rows:
        if param is None or update is None:
            continue
        if jnp.iscomplexobj(update) and not jnp.iscomplexobj(param):
            raise ValueError(
                f"apply_updates: updates leaf {path!r} is complex but its param is "
                f"{jnp.result_type(param).name}; the imaginary part would be dropped."
            )
    present = [p is not None and u is not None for _, p, u in rows]
    return _add(params, updates, select=present, is_leaf=_is_none)


def _is_none(x: Any) -> bool:
    return x is None


@leaf_kernel
def _add(param: jax.Array, update: jax.Array) -> jax.Array:
    return param + update


def stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transform with no state from a function ``fn(updates, params) -> updates``."""

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, EmptyState]:
        del extra_args
        return fn(updates, params), state

    return GradientTransformation(init, update)


def require_params(params: Params | None, where: str) -> Params:
    """Return ``params``, or fail with a clear message when a transform that reads them got none."""
    if params is None:
        raise ValueError(
            f"{where} reads the params: call `update(updates, state, params)` with params."
        )
    return params
