"""The grad_scaler parity cases: one table read by the torch oracle, the golden generator and the
tests.

Every case runs the same loop in both frameworks. The problem: params :data:`START` and at each
step the gradient ``g = 2p - sin(p)`` (numpy, from the current params) of the loss
``sum(p * g)`` with ``g`` held fixed, so that ``scaler.scale(loss).backward()`` in torch and
``jax.grad(lambda p: loss(p) * optkit.loss_scale(state))`` give ``scale * g`` in both. At the
steps of :data:`BAD_STEPS` one element of ``g`` is replaced by inf, -inf or NaN (three steps in a
row among them), and ``growth_interval=3`` lets the scale grow several times in between.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

import optkit
from tests.support.optimizer_info import to_torch_kwargs

_rng = np.random.default_rng(13)
START: dict[str, np.ndarray] = {"w": _rng.normal(size=(3, 4)), "b": _rng.normal(size=(4,))}
STEPS = 24

BAD_STEPS: dict[int, tuple[str, float]] = {
    2: ("w", np.inf),
    6: ("b", np.nan),
    7: ("w", -np.inf),
    8: ("w", np.nan),
    13: ("b", np.inf),
    17: ("w", np.nan),
}
"""Step -> (leaf, value put in its first element). Steps 6-8 are skipped three times in a row."""

RTOL = {"float64": 1e-10, "float32": 1e-5}
"""Parity bounds on the params, relative, by dtype."""

SCHEDULE_GAMMA = 0.9
"""The cases with a schedule use torch's ``ExponentialLR(gamma=0.9)`` (optkit's
``schedules.exponential_lr``) from the optimizer's learning rate."""


def gradient(params: Mapping[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    """``2p - sin(p)`` for each leaf, with step ``step``'s bad value if it has one."""
    grads = {name: 2 * p - np.sin(p) for name, p in params.items()}
    if step in BAD_STEPS:
        leaf, value = BAD_STEPS[step]
        grads[leaf] = grads[leaf].copy()
        grads[leaf].flat[0] = value
    return grads


@dataclasses.dataclass(frozen=True)
class ScalerCase:
    """One loop: an optimizer (optkit name and arguments), GradScaler's settings and options.

    ``clip``: ``clip_grad_norm_(max_norm=clip)`` after ``scaler.unscale_``, as
    ``clip_by_global_norm`` inside the scaler. ``group_b``: the overrides of a second param
    group holding ``b`` (the first holds ``w``). ``schedule``: ``"inside"`` steps torch's
    scheduler only when the optimizer ran (Hugging Face's ``optimizer_was_run``; optkit: an
    ``inject_hyperparams`` optimizer inside the scaler); ``"outside"`` steps it every iteration
    (the plain torch loop; optkit: ``inject_hyperparams`` around the scaler).
    """

    id: str
    optimizer: str
    kwargs: Mapping[str, Any]
    scaler: Mapping[str, Any]
    torch_class: str
    clip: float | None = None
    group_b: Mapping[str, Any] | None = None
    schedule: str | None = None
    dtype: str = "float64"
    init_scale_exponent: int = 10

    @property
    def scaler_kwargs(self) -> dict[str, Any]:
        return {"init_scale": 2.0**self.init_scale_exponent, "growth_interval": 3, **self.scaler}

    def torch_spec(self) -> str:
        """Everything that decides torch's run, as JSON: a stale golden entry is detected."""
        spec = dataclasses.asdict(self)
        spec.update(torch_kwargs=to_torch_kwargs(self.kwargs), scaler=self.scaler_kwargs)
        spec.update(
            steps=STEPS, bad_steps={str(k): [v[0], str(v[1])] for k, v in BAD_STEPS.items()}
        )
        return json.dumps(spec, sort_keys=True)

    def make_tx(self) -> optkit.GradientTransformation:
        """optkit's side of the loop."""
        if self.schedule == "outside":
            kwargs = dict(self.kwargs)
            schedule = optkit.schedules.exponential_lr(kwargs.pop("learning_rate"), SCHEDULE_GAMMA)
            return optkit.inject_hyperparams(
                lambda learning_rate: optkit.grad_scaler(
                    self._optimizer(learning_rate=learning_rate, **kwargs), **self.scaler_kwargs
                )
            )(learning_rate=schedule)
        return optkit.grad_scaler(self.make_inner(), **self.scaler_kwargs)

    def make_inner(self) -> optkit.GradientTransformation:
        """What the scaler wraps (with a schedule inside: an injected optimizer)."""
        kwargs = dict(self.kwargs)
        if self.schedule == "inside":
            kwargs["learning_rate"] = optkit.schedules.exponential_lr(
                kwargs["learning_rate"], SCHEDULE_GAMMA
            )
        return self._optimizer(**kwargs)

    def _optimizer(self, **kwargs: Any) -> optkit.GradientTransformation:
        factory = getattr(optkit, self.optimizer)
        if self.schedule == "inside":
            factory = optkit.inject_hyperparams(factory)
        if self.group_b is not None:
            groups = [{"params": "w"}, {"params": "b", **self.group_b}]
            tx = optkit.param_groups(factory, groups, **kwargs)
        else:
            tx = factory(**kwargs)
        if self.clip is not None:
            tx = optkit.chain(optkit.clip_by_global_norm(self.clip), tx)
        return tx


SGD = {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01}
ADAMW = {"learning_rate": 0.02, "weight_decay": 0.1}

CASES: tuple[ScalerCase, ...] = (
    ScalerCase("sgd_momentum", "sgd", SGD, {}, "SGD"),
    # Factors that are no float32 number: the new scale's double rounding matters.
    ScalerCase("adamw", "adamw", ADAMW, {"growth_factor": 1.1, "backoff_factor": 0.3}, "AdamW"),
    ScalerCase(
        "nadam",
        "nadam",
        {"learning_rate": 0.02, "momentum_decay": 0.1},
        {"growth_factor": 1.5, "backoff_factor": 0.7},
        "NAdam",
    ),
    ScalerCase("adadelta", "adadelta", {"learning_rate": 1.0}, {}, "Adadelta"),
    ScalerCase("sgd_clip", "sgd", SGD, {}, "SGD", clip=0.5),
    ScalerCase("adamw_clip", "adamw", ADAMW, {"backoff_factor": 0.9}, "AdamW", clip=1.0),
    ScalerCase(
        "sgd_param_groups",
        "sgd",
        SGD,
        {},
        "SGD",
        group_b={"learning_rate": 0.01, "momentum": 0.5},
    ),
    ScalerCase("adamw_schedule_inside", "adamw", ADAMW, {}, "AdamW", schedule="inside"),
    ScalerCase("adamw_schedule_outside", "adamw", ADAMW, {}, "AdamW", schedule="outside"),
    ScalerCase("sgd_momentum_float32", "sgd", SGD, {}, "SGD", dtype="float32"),
    # Scales near float32's limit: scale * g overflows to inf by itself at the higher scales, so
    # the scale backs off step after step, then grows back into overflow.
    ScalerCase(
        "adamw_float32_overflow",
        "adamw",
        ADAMW,
        {"growth_factor": 1.5, "backoff_factor": 0.9},
        "AdamW",
        clip=1.0,
        dtype="float32",
        init_scale_exponent=127,
    ),
)


def bitwise_equal(a: Any, b: Any) -> bool:
    """Same tree structure and, leaf by leaf, the same dtype, shape and bytes."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        x.dtype == y.dtype
        and np.shape(x) == np.shape(y)
        and np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
