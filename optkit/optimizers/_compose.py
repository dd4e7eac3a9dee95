"""What every optimizer module shares: building a chain from the transforms its flags select."""

from __future__ import annotations

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, chain
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
