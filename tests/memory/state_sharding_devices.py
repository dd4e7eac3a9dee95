"""ZeRO-1 on 8 simulated CPU devices, run as a script by test_state_sharding_devices.py.

The device count is fixed when JAX starts, so this runs in a fresh interpreter
(``python state_sharding_devices.py CHECKPOINT_DIR``) and prints one JSON object of what it
observed. For each optimizer and layout, the same 10 float32 steps run twice from the same
params and batches: once with the state placed like the params (``jax.jit(tx.init)``), once
with the state placed by ``optkit.state_sharding`` (as ``out_shardings`` of ``jit(tx.init)`` and
as the state's in/out shardings of the step). Layouts:

- ``data``: a 1-D mesh of 8 ``data`` devices, params replicated, batch split over ``data``;
- ``data_model``: a ``("data", "model") = (4, 2)`` mesh, kernels split over ``model``, batch
  split over ``data``.

All optimizers share one jitted program per layout and placement (a dict keyed by name), so the
script compiles four steps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optkit
from tests.support.registry import BY_NAME

DEVICES, STEPS = 8, 10
IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 16, 64, 8, 32

OPTIMIZERS = {
    "adamw": lambda: optkit.adamw(1e-2, weight_decay=0.1),
    "sgd": BY_NAME["sgd"].make,
    "adafactor": BY_NAME["adafactor"].make,
    "param_groups": lambda: optkit.param_groups(
        optkit.adamw,
        [{"params": "**/kernel"}, {"params": "**/bias", "weight_decay": 0.0}],
        learning_rate=1e-2,
    ),
    "inject_hyperparams": lambda: optkit.inject_hyperparams(optkit.adamw)(learning_rate=1e-2),
    "flatten": lambda: optkit.flatten(optkit.adamw(1e-2)),
    "training_loop": lambda: optkit.weight_averaging(
        optkit.accumulate_gradients(
            optkit.grad_scaler(
                optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adamw(1e-2)),
                init_scale=4.0,
                growth_interval=2,
            ),
            every_k=2,
        ),
        mode="ema",
        decay=0.9,
    ),
}
LAYOUTS = {
    "data": ((DEVICES,), ("data",), {"l1": (P(), P()), "l2": (P(), P())}),
    "data_model": (
        (4, 2),
        ("data", "model"),
        {"l1": (P(None, "model"), P("model")), "l2": (P("model", None), P())},
    ),
}
CHECKPOINTED = ("adamw", "training_loop")


def make_mesh(layout: str) -> Mesh:
    shape, names, _ = LAYOUTS[layout]
    return Mesh(np.array(jax.devices()).reshape(shape), names)


def make_params(layout: str) -> dict:
    rng = np.random.default_rng(0)
    mesh, specs = make_mesh(layout), LAYOUTS[layout][2]
    shapes = {
        "l1": ((IN_FEATURES, HIDDEN), (HIDDEN,)),
        "l2": ((HIDDEN, OUT_FEATURES), (OUT_FEATURES,)),
    }
    return {
        name: {
            key: jax.device_put(
                (rng.normal(size=shape) / 4).astype(np.float32), NamedSharding(mesh, spec)
            )
            for key, shape, spec in zip(("kernel", "bias"), shapes[name], specs[name], strict=True)
        }
        for name in shapes
    }


def make_batches(layout: str) -> list[tuple[jax.Array, jax.Array]]:
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(IN_FEATURES, OUT_FEATURES))
    rows = NamedSharding(make_mesh(layout), P("data"))
    batches = []
    for _ in range(STEPS):
        x = rng.normal(size=(BATCH, IN_FEATURES)).astype(np.float32)
        y = np.tanh(x @ teacher).astype(np.float32)
        batches.append((jax.device_put(x, rows), jax.device_put(y, rows)))
    return batches


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    return jnp.mean((hidden @ params["l2"]["kernel"] + params["l2"]["bias"] - y) ** 2)


def train(layout: str, txs: dict[str, Any], zero: bool) -> tuple[dict, dict, dict]:
    """10 steps of every optimizer; returns the final params, states and the shardings used."""
    params = make_params(layout)
    mesh = make_mesh(layout)
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    init_all = lambda params: {name: tx.init(params) for name, tx in txs.items()}
    if zero:
        shardings = {name: optkit.state_sharding(tx, params, mesh=mesh) for name, tx in txs.items()}
        states = jax.jit(init_all, out_shardings=shardings)(params)
    else:
        states = jax.jit(init_all)(params)
        shardings = jax.tree.map(lambda leaf: leaf.sharding, states)

    def step_all(params, states, x, y):
        out_params, out_states = {}, {}
        for name, tx in txs.items():
            grads = jax.grad(loss_fn)(params[name], x, y)
            updates, out_states[name] = tx.update(grads, states[name], params[name])
            out_params[name] = optkit.apply_updates(params[name], updates)
        return out_params, out_states

    all_param_shardings = {name: param_shardings for name in txs}
    step = jax.jit(
        step_all,
        in_shardings=(all_param_shardings, shardings, None, None),
        out_shardings=(all_param_shardings, shardings),
    )
    all_params = {name: params for name in txs}
    for index, (x, y) in enumerate(make_batches(layout)):
        all_params, states = step(all_params, states, x, y)
        if index == 4:
            # A runtime change on the sharded state: the value lands replicated, the step reruns.
            states["inject_hyperparams"] = optkit.set_hyperparams(
                states["inject_hyperparams"], learning_rate=5e-3
            )
    return all_params, states, shardings


def relative_error(actual: Any, expected: Any) -> float:
    """The largest ``max|a - b| / max|b|`` over the leaves."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(np.max(np.abs(b)), 1e-30) if b.size else 1.0
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0) / scale))
    return worst


def held_bytes(state: Any) -> dict[str, Any]:
    """Bytes of state per device, read from the arrays' addressable shards, and the totals."""
    per_device = {str(d.id): 0 for d in jax.devices()}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[str(shard.device.id)] += shard.data.nbytes
    leaves = jax.tree.leaves(state)
    return {
        "per_device": per_device,
        "array_bytes": sum(leaf.nbytes for leaf in leaves if leaf.ndim > 0),
        "scalar_bytes": sum(leaf.nbytes for leaf in leaves if leaf.ndim == 0),
    }


def placed_as(state: Any, shardings: Any) -> bool:
    return all(
        leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
        for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True)
    )


def round_trip(state: Any, shardings: Any, directory: Path) -> dict[str, bool]:
    """Save a sharded state with orbax and restore it into the same shardings."""
    target = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), state, shardings
    )
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory, state)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(directory, target)
    return {
        "same_structure": jax.tree.structure(restored) == jax.tree.structure(state),
        "same_values": all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True)
        ),
        "same_shardings": placed_as(restored, shardings),
    }


def main(checkpoint_dir: str) -> None:
    if jax.device_count() != DEVICES:
        raise SystemExit(f"expected {DEVICES} devices, got {jax.device_count()}")
    txs = {name: build() for name, build in OPTIMIZERS.items()}
    out: dict[str, Any] = {}
    for layout in LAYOUTS:
        params_replicated, states_replicated, _ = train(layout, txs, zero=False)
        params_zero, states_zero, shardings = train(layout, txs, zero=True)
        for name in txs:
            record = {
                "params_error": relative_error(params_zero[name], params_replicated[name]),
                "state_error": relative_error(states_zero[name], states_replicated[name]),
                "placed_as_asked": placed_as(states_zero[name], shardings[name]),
                "zero": held_bytes(states_zero[name]),
                "replicated": held_bytes(states_replicated[name]),
            }
            if name in CHECKPOINTED:
                directory = Path(checkpoint_dir).absolute() / f"{layout}_{name}"
                record["orbax"] = round_trip(states_zero[name], shardings[name], directory)
            out.setdefault(name, {})[layout] = record
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
