"""The whole training loop around the optimizer, in torch and in optkit, on one small problem.

torch's loop, per optimizer step, is the one of its AMP recipe with gradient accumulation and
an EMA model::

    for i in range(k):
        scaler.scale(loss(model(x_i), y_i) / k).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    ema.update_parameters(model)

optkit's is one transformation, updated once per micro-batch with the gradient of
``loss * optkit.loss_scale(state)``::

    weight_averaging(
        accumulate_gradients(grad_scaler(chain(clip_by_global_norm(MAX_NORM), groups)), k),
        mode="ema", decay=DECAY, start_step=k - 1, every_k=k,
    )

Some micro-batches have an infinite or NaN target, so their optimizer steps overflow: torch's
scaler skips them and backs off, and the small ``growth_interval`` makes the scale grow several
times in between. Both runs record, after every optimizer step, the params, the loss scale and
the EMA params.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit

IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 3, 5, 2, 4
MAX_NORM = 1.0
DECAY = 0.8
GROWTH_INTERVAL = 2
INIT_SCALE = 2.0**10
LEAVES = ("hidden/kernel", "hidden/bias", "out/kernel", "out/bias")


@dataclasses.dataclass(frozen=True)
class LoopCase:
    """One optimizer inside the loop: its torch class and kwargs, and the optkit factory."""

    id: str
    torch_class: str
    torch_kwargs: dict[str, Any]
    make: Callable[..., optkit.GradientTransformation]
    kwargs: dict[str, Any]
    every_k: int = 3
    steps: int = 10
    # Micro-batches whose target is +inf or NaN (their optimizer steps must be skipped).
    inf_at: tuple[int, ...] = (4,)
    nan_at: tuple[int, ...] = (10, 13)

    def spec(self) -> str:
        return json.dumps(
            {
                "torch_class": self.torch_class,
                "torch_kwargs": self.torch_kwargs,
                "every_k": self.every_k,
                "steps": self.steps,
                "inf_at": self.inf_at,
                "nan_at": self.nan_at,
                "constants": [MAX_NORM, DECAY, GROWTH_INTERVAL, INIT_SCALE, BATCH],
            },
            sort_keys=True,
        )


CASES = (
    LoopCase(
        "sgd_momentum",
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        optkit.sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    ),
    LoopCase(
        "adamw",
        "AdamW",
        {"lr": 0.02, "weight_decay": 0.1},
        optkit.adamw,
        {"learning_rate": 0.02, "weight_decay": 0.1},
        every_k=4,
        inf_at=(5,),
        nan_at=(13, 17),
    ),
    LoopCase(
        "nadam",
        "NAdam",
        {"lr": 0.02, "weight_decay": 0.01, "decoupled_weight_decay": True},
        optkit.nadam,
        {"learning_rate": 0.02, "weight_decay": 0.01, "decoupled_weight_decay": True},
    ),
)
BY_ID = {case.id: case for case in CASES}


def initial_params(dtype: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {
        "hidden/kernel": (IN_FEATURES, HIDDEN),
        "hidden/bias": (HIDDEN,),
        "out/kernel": (HIDDEN, OUT_FEATURES),
        "out/bias": (OUT_FEATURES,),
    }
    return {name: (0.5 * rng.standard_normal(shapes[name])).astype(dtype) for name in LEAVES}


def micro_batches(case: LoopCase, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, BATCH, IN)`` and targets ``(n, BATCH, OUT)``, poisoned where the case says."""
    rng = np.random.default_rng(1)
    count = case.steps * case.every_k
    xs = rng.standard_normal((count, BATCH, IN_FEATURES)).astype(dtype)
    ys = rng.standard_normal((count, BATCH, OUT_FEATURES)).astype(dtype)
    for index in case.inf_at:
        ys[index, 0, 0] = np.inf
    for index in case.nan_at:
        ys[index, 1, 1] = np.nan
    return xs, ys


def nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tree: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        layer, leaf = name.split("/")
        tree.setdefault(layer, {})[leaf] = value
    return tree


def flat(tree: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    return {name: np.asarray(tree[name.split("/")[0]][name.split("/")[1]]) for name in LEAVES}


def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    prediction = hidden @ params["out"]["kernel"] + params["out"]["bias"]
    return jnp.mean((prediction - y) ** 2)


def make_loop(case: LoopCase) -> optkit.GradientTransformation:
    groups = optkit.param_groups(
        case.make,
        [{"params": "**/kernel"}, {"params": "**/bias", "weight_decay": 0.0}],
        **case.kwargs,
    )
    scaled = optkit.grad_scaler(
        optkit.chain(optkit.clip_by_global_norm(MAX_NORM), groups),
        init_scale=INIT_SCALE,
        growth_interval=GROWTH_INTERVAL,
    )
    return optkit.weight_averaging(
        optkit.accumulate_gradients(scaled, case.every_k),
        mode="ema",
        decay=DECAY,
        start_step=case.every_k - 1,
        every_k=case.every_k,
    )


def make_micro_step(tx: optkit.GradientTransformation, *, donate: bool = True) -> Callable:
    """One jitted micro-step: the gradient of the scaled loss, the update, the new params."""

    def micro_step(params, state, x, y):
        scale = optkit.loss_scale(state)
        grads = jax.grad(lambda p: loss_fn(p, x, y) * scale.astype(x.dtype))(params)
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    return jax.jit(micro_step, donate_argnums=(0, 1) if donate else ())


@dataclasses.dataclass
class Trajectory:
    """Per optimizer step: params and EMA params by leaf name ``(steps, ...)``, and the scale."""

    params: dict[str, np.ndarray]
    averaged: dict[str, np.ndarray]
    scale: np.ndarray


def stack(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([record[name] for record in records]) for name in LEAVES}


def run_optkit(case: LoopCase, dtype: Any, micro_step: Callable | None = None) -> Trajectory:
    tx = make_loop(case)
    micro_step = micro_step or make_micro_step(tx)
    params = jax.tree.map(jnp.asarray, nested(initial_params(dtype)))
    state = tx.init(params)
    xs, ys = micro_batches(case, dtype)
    records, averaged, scales = [], [], []
    for index in range(len(xs)):
        params, state = micro_step(params, state, xs[index], ys[index])
        if (index + 1) % case.every_k == 0:
            records.append(flat(params))
            averaged.append(flat(optkit.get_averaged_params(state)))
            scales.append(float(optkit.loss_scale(state)))
    return Trajectory(stack(records), stack(averaged), np.asarray(scales))


def run_torch(case: LoopCase, dtype: Any) -> Trajectory:
    import torch

    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(dtype).type]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            start = initial_params(dtype)
            self.weights = torch.nn.ParameterDict(
                {
                    name.replace("/", "_"): torch.nn.Parameter(torch.tensor(start[name]))
                    for name in LEAVES
                }
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.weights
            hidden = torch.tanh(x @ w["hidden_kernel"] + w["hidden_bias"])
            return hidden @ w["out_kernel"] + w["out_bias"]

    model = Model()
    w = model.weights
    groups = [
        {"params": [w["hidden_kernel"], w["out_kernel"]]},
        {"params": [w["hidden_bias"], w["out_bias"]], "weight_decay": 0.0},
    ]
    opt = getattr(torch.optim, case.torch_class)(groups, **case.torch_kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=GROWTH_INTERVAL)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(DECAY)
    )
    xs, ys = micro_batches(case, dtype)
    records, averaged, scales = [], [], []

    def snapshot(module: torch.nn.Module) -> dict[str, np.ndarray]:
        found = {name: p for name, p in module.named_parameters()}
        out = {}
        for name in LEAVES:
            key = next(k for k in found if k.endswith(name.replace("/", "_")))
            out[name] = found[key].detach().numpy().copy()
        return out

    for step in range(case.steps):
        for micro in range(case.every_k):
            index = step * case.every_k + micro
            x = torch.tensor(xs[index], dtype=torch_dtype)
            y = torch.tensor(ys[index], dtype=torch_dtype)
            loss = torch.mean((model(x) - y) ** 2) / case.every_k
            scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        ema.update_parameters(model)
        records.append(snapshot(model))
        averaged.append(snapshot(ema.module))
        scales.append(scaler.get_scale())
    return Trajectory(stack(records), stack(averaged), np.asarray(scales))
