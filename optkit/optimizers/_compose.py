"""What every optimizer module shares: building a chain from the transforms its flags select, and
describing the result as the torch.optim class it reproduces."""

from __future__ import annotations

import types
from typing import Any

from optkit import _state, _tree, _validation
from optkit._base import (
    DescribedTransformation,
    GradientTransformation,
    OptimizerDescription,
    OptState,
    Params,
    Scalar,
    Updates,
    chain,
)
from optkit.transforms.scaling import negate
from optkit.transforms.weight_decay import add_l2_decay


def chain_present(*transforms: GradientTransformation | None) -> GradientTransformation:
    """``chain`` of the transforms that are not ``None`` (flags switch primitives on and off)."""
    return chain(*(t for t in transforms if t is not None))


def maybe_negate(maximize: bool) -> GradientTransformation | None:
    """torch's ``maximize``: negate the gradient before anything else sees it."""
    return negate() if _validation.boolean("maximize", maximize) else None


def maybe_l2_decay(weight_decay: Scalar) -> GradientTransformation | None:
    """torch's coupled ``weight_decay``, left out of the chain when it is a Python zero."""
    return None if _validation.is_static_zero(weight_decay) else add_l2_decay(weight_decay)


def described(
    transform: GradientTransformation,
    torch_class: str,
    *,
    elementwise: bool = False,
    **arguments: Any,
) -> GradientTransformation:
    """``transform``, carrying the ``torch.optim`` class it reproduces and every argument of the
    factory that built it (by optkit name), for :func:`optkit.to_torch_state_dict` and
    :func:`optkit.from_torch_state_dict` to read. Its ``update`` refuses a state that another
    optimizer's ``init`` made (:func:`optkit._state.checking_state`).

    Its ``init`` and ``update`` also apply the dtype rules every optimizer shares: Python float
    leaves are 0-d arrays, integer or bool params are refused at ``init`` and integer or bool
    gradients at ``update``, and gradients are promoted to their params' dtype (or refused when
    that would round them), naming the leaf. ``elementwise`` says that each leaf's update depends
    only on that leaf and the state's scalars, element by element (see
    :attr:`optkit.DescribedTransformation.elementwise`)."""
    description = OptimizerDescription(torch_class, types.MappingProxyType(dict(arguments)))
    where = f"optkit's {torch_class}"

    def init(params: Params) -> OptState:
        params = _tree.as_arrays(params)
        _tree.check_params(params, where)
        return transform.init(params)

    def update(
        updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        # The dtype rules (docs/dtypes.md): the primitives promote or refuse each update against
        # their state; against the params here, so a chain's first transforms see them too.
        if params is not None:
            params = _tree.as_arrays(params)
            updates = _tree.check_updates(params, updates, where, "params")
        return transform.update(_tree.as_arrays(updates), state, params, **extra_args)

    checked = _state.checking_state(init, update, f"{torch_class} update")
    return DescribedTransformation(init, checked, description, elementwise=elementwise)
