"""How each ``torch.optim`` class lays out its ``state_dict()``, and where optkit keeps the same
numbers: one :class:`TorchClass` per class, read by :mod:`optkit.interop.torch_state_dict`.

A torch ``state_dict()`` is ``{"state": {id: {key: tensor}}, "param_groups": [group, ...]}``:
per parameter a few named tensors (``step``, ``exp_avg``, ...), per group its hyperparameters.
optkit keeps each per-parameter tensor as one leaf of a buffer tree in a state NamedTuple (the
``mu`` field of :class:`~optkit.ScaleByAdamState` holds every ``exp_avg``), torch's per-parameter
``step`` as that state's ``count``, and the per-parameter scalars that torch keeps equal within a
group (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) once per group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from optkit.optimizers.adadelta import ScaleByAdadeltaState
from optkit.optimizers.adafactor import ScaleByAdafactorState
from optkit.optimizers.adagrad import ScaleByRssState
from optkit.optimizers.adam import ScaleByAdamState
from optkit.optimizers.adamax import ScaleByAdamaxState
from optkit.optimizers.asgd import ScaleByAsgdState
from optkit.optimizers.muon import ScaleByMuonState
from optkit.optimizers.nadam import ScaleByNadamState
from optkit.optimizers.radam import ScaleByRadamState
from optkit.optimizers.rmsprop import ScaleByRmsState
from optkit.optimizers.rprop import ScaleByRpropState
from optkit.optimizers.sparse_adam import ScaleBySparseAdamState
from optkit.transforms.momentum import TraceState


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A param-group entry that optkit's optimizer has no argument for: written as ``value``. On
    import it is checked against ``value`` when ``checked`` (it changes the math, e.g. Adam's
    ``decoupled_weight_decay``) and ignored otherwise (torch's implementation switches)."""

    value: Any
    checked: bool = False


Source = str | tuple[str, ...] | Fixed
"""Where a param-group entry comes from: an optkit argument, several packed into one tuple
(``betas`` from ``b1``, ``b2``), or a :class:`Fixed` value."""

# torch's implementation switches, with its defaults. jax.jit makes them moot: they are written
# so that load_state_dict finds a complete group, and never checked.
_SWITCHES: dict[str, Fixed] = {
    "foreach": Fixed(None),
    "capturable": Fixed(False),
    "differentiable": Fixed(False),
    "fused": Fixed(None),
}
_RENAMED: dict[str, Source] = {"lr": "learning_rate", "betas": ("b1", "b2")}


def _group(keys: str, **fixed: Fixed) -> tuple[tuple[str, Source], ...]:
    """A class's param-group entries in torch's order, from their torch names (all arguments of
    the same name in optkit, except ``lr``, ``betas``, the switches and ``fixed``)."""
    return tuple(
        (key, fixed.get(key) or _SWITCHES.get(key) or _RENAMED.get(key) or key)
        for key in keys.split()
    )


@dataclasses.dataclass(frozen=True)
class Buffer:
    """A per-parameter entry of torch's state and the optkit state field that holds it."""

    key: str
    state_type: type
    field: str
    when: Callable[[Mapping[str, Any]], bool] | None = None
    """torch keeps it only when this holds for the parameter's group (RMSprop's momentum
    buffer, created when ``momentum > 0``); ``None``: whenever optkit's state has it."""


@dataclasses.dataclass(frozen=True)
class TorchClass:
    """One ``torch.optim`` class's ``state_dict()`` layout.

    Attributes:
        group: The param-group entries, in torch's order.
        buffers: The per-parameter tensors shaped like the parameter.
        scalars: The per-parameter scalars torch keeps equal within a group.
        counter: The optkit state whose ``count`` is the group's number of updates.
        step: torch stores that count as ``state[p]["step"]`` (a float tensor, or an int).
        integer_step: torch's ``step`` is a Python int (SparseAdam).
        eager: torch creates the state when the optimizer is built (Adagrad), not at the first
            step, so a fresh optimizer has state too.
        keeps_state: Whether torch keeps any state for a group (SGD: only with momentum).
        factored: Buffers that are row and column statistics of a matrix (Adafactor's), which a
            transposed layout swaps.
    """

    group: tuple[tuple[str, Source], ...]
    buffers: tuple[Buffer, ...]
    counter: type | None
    step: bool = True
    scalars: tuple[Buffer, ...] = ()
    integer_step: bool = False
    eager: bool = False
    keeps_state: Callable[[Mapping[str, Any]], bool] = lambda group: True
    factored: tuple[str, str] | None = None


def _buffers(state_type: type, **fields: str) -> tuple[Buffer, ...]:
    """Buffers of one state type, as ``torch_key=field``."""
    return tuple(Buffer(key, state_type, field) for key, field in fields.items())


_ADAM_GROUP = "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused"
_ADAM_BUFFERS = _buffers(ScaleByAdamState, exp_avg="mu", exp_avg_sq="nu", max_exp_avg_sq="nu_max")

TORCH_CLASSES: dict[str, TorchClass] = {
    "SGD": TorchClass(
        group=_group(
            "lr momentum dampening weight_decay nesterov maximize foreach differentiable fused"
        ),
        buffers=_buffers(TraceState, momentum_buffer="trace"),
        counter=TraceState,
        step=False,
        keeps_state=lambda group: group["momentum"] != 0,
    ),
    "Adam": TorchClass(
        group=_group(
            _ADAM_GROUP + " decoupled_weight_decay", decoupled_weight_decay=Fixed(False, True)
        ),
        buffers=_ADAM_BUFFERS,
        counter=ScaleByAdamState,
    ),
    "AdamW": TorchClass(
        group=_group(
            _ADAM_GROUP + " decoupled_weight_decay", decoupled_weight_decay=Fixed(True, True)
        ),
        buffers=_ADAM_BUFFERS,
        counter=ScaleByAdamState,
    ),
    "Adagrad": TorchClass(
        group=_group(
            "lr lr_decay eps weight_decay initial_accumulator_value foreach maximize "
            "differentiable fused"
        ),
        buffers=_buffers(ScaleByRssState, sum="sum_of_squares"),
        counter=ScaleByRssState,
        eager=True,
    ),
    "RMSprop": TorchClass(
        group=_group(
            "lr momentum alpha eps centered weight_decay capturable foreach maximize differentiable"
        ),
        buffers=(
            Buffer("square_avg", ScaleByRmsState, "nu"),
            Buffer(
                "momentum_buffer", TraceState, "trace", when=lambda group: group["momentum"] > 0
            ),
            Buffer("grad_avg", ScaleByRmsState, "mu"),
        ),
        counter=ScaleByRmsState,
    ),
    "Adadelta": TorchClass(
        group=_group("lr rho eps weight_decay maximize capturable foreach differentiable"),
        buffers=_buffers(ScaleByAdadeltaState, square_avg="square_avg", acc_delta="acc_delta"),
        counter=ScaleByAdadeltaState,
    ),
    "Adamax": TorchClass(
        group=_group("lr betas eps weight_decay foreach maximize differentiable capturable"),
        buffers=_buffers(ScaleByAdamaxState, exp_avg="mu", exp_inf="inf_norm"),
        counter=ScaleByAdamaxState,
    ),
    "NAdam": TorchClass(
        group=_group(
            "lr betas eps weight_decay momentum_decay decoupled_weight_decay maximize foreach "
            "capturable differentiable"
        ),
        scalars=_buffers(ScaleByNadamState, mu_product="mu_product"),
        buffers=_buffers(ScaleByNadamState, exp_avg="mu", exp_avg_sq="nu"),
        counter=ScaleByNadamState,
    ),
    "RAdam": TorchClass(
        group=_group(
            "lr betas eps weight_decay maximize foreach capturable decoupled_weight_decay "
            "differentiable"
        ),
        buffers=_buffers(ScaleByRadamState, exp_avg="mu", exp_avg_sq="nu"),
        counter=ScaleByRadamState,
    ),
    "Adafactor": TorchClass(
        group=_group("lr beta2_decay eps d weight_decay foreach maximize"),
        buffers=_buffers(
            ScaleByAdafactorState, row_var="row_var", col_var="col_var", variance="variance"
        ),
        counter=ScaleByAdafactorState,
        factored=("row_var", "col_var"),
    ),
    "ASGD": TorchClass(
        group=_group("lr lambd alpha t0 weight_decay foreach maximize differentiable capturable"),
        scalars=_buffers(ScaleByAsgdState, eta="eta", mu="mu"),
        buffers=_buffers(ScaleByAsgdState, ax="ax"),
        counter=ScaleByAsgdState,
    ),
    "Rprop": TorchClass(
        group=_group("lr etas step_sizes foreach maximize differentiable capturable"),
        buffers=_buffers(ScaleByRpropState, prev="prev", step_size="step_size"),
        counter=ScaleByRpropState,
    ),
    "SparseAdam": TorchClass(
        group=_group("lr betas eps maximize"),
        buffers=_buffers(ScaleBySparseAdamState, exp_avg="mu", exp_avg_sq="nu"),
        counter=ScaleBySparseAdamState,
        integer_step=True,
    ),
    "Muon": TorchClass(
        group=_group("lr weight_decay momentum nesterov ns_coefficients eps ns_steps adjust_lr_fn"),
        buffers=_buffers(ScaleByMuonState, momentum_buffer="momentum_buffer"),
        counter=None,
        step=False,
    ),
}
