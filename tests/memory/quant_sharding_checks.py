"""Run in a fresh interpreter with 8 simulated CPU devices (``test_quant_state.py`` starts it):
how ``quantize_state`` places codes and scales, eagerly and under ``jit``, and ZeRO-1 of a
quantized state with ``optkit.state_sharding``, on a ``Mesh`` (auto axes) and on a
``jax.make_mesh`` mesh (explicit axes). Prints JSON; ``python quant_sharding_checks.py DIR``
(DIR for the orbax checkpoints)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import optkit

# rows: split along the first axis, 8 rows (8 or 4 blocks) per device: partitioned.
# columns: split along the second axis: a device's share is not contiguous: replicated.
# few_rows: 8 rows of 256 split 8 ways: one block of 256 per device: partitioned; with blocks
# of 512 a device holds half a block: replicated.
SPECS = {
    "rows": ((64, 256), PartitionSpec("data", None)),
    "columns": ((64, 256), PartitionSpec(None, "data")),
    "few_rows": ((8, 256), PartitionSpec("data", None)),
}
MESHES = {
    "mesh": lambda: Mesh(np.array(jax.devices()), ("data",)),  # auto axes
    "make_mesh": lambda: jax.make_mesh((8,), ("data",)),  # explicit axes by default
}
# ZeRO-1: replicated params, the state partitioned by state_sharding. "w"'s buffers (65536
# elements) are quantized, 256 blocks of 256 (8 bits) or 512 of 128 (4 bits); "b" (256) is not.
ZERO_PARAMS = {"w": (256, 256), "b": (256,)}
ZERO_OPTIMIZERS = {
    "adamw": lambda: optkit.adamw(1e-2, weight_decay=0.1),
    "adamw8bit": lambda: optkit.quantize_state(optkit.adamw(1e-2, weight_decay=0.1)),
    "adamw4bit": lambda: optkit.quantize_state(optkit.adamw(1e-2, weight_decay=0.1), bits=4),
}
ZERO_STEPS = 3


def spec_of(array: jax.Array) -> list:
    """The spec as JSON, trailing ``None`` entries dropped (explicit axes spell them out)."""
    spec = [list(a) if isinstance(a, tuple) else a for a in array.sharding.spec]
    while spec and spec[-1] is None:
        spec.pop()
    return spec


def placements(mesh: Mesh) -> dict:
    rng = np.random.default_rng(0)
    host = {k: rng.standard_normal(shape).astype(np.float32) for k, (shape, _) in SPECS.items()}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in host.items()}
    placed = {k: jax.device_put(v, NamedSharding(mesh, SPECS[k][1])) for k, v in host.items()}
    placed_grads = {
        k: jax.device_put(v, NamedSharding(mesh, SPECS[k][1])) for k, v in grads.items()
    }
    report = {}
    for block_size in (256, 512):
        tx = optkit.quantize_state(optkit.adamw(1e-2), block_size=block_size, min_size=0)
        step = jax.jit(tx.update)
        eager = tx.init(placed)
        jitted = jax.jit(tx.init)(placed)
        updates, after = step(placed_grads, eager, placed)
        jitted_updates, _ = step(placed_grads, jitted, placed)
        reference_updates, _ = step(grads, tx.init(host), host)
        report[block_size] = {
            name: {
                "eager": spec_of(eager[0].mu[name].codes),
                "eager_scale": spec_of(eager[0].nu[name].scale),
                "jit_init": spec_of(jitted[0].mu[name].codes),
                "step": spec_of(after[0].nu[name].codes),
                "same_updates": all(
                    np.array_equal(np.asarray(u[name]), np.asarray(reference_updates[name]))
                    for u in (updates, jitted_updates)
                ),
            }
            for name in SPECS
        }
    return report


def _train_step(tx: optkit.GradientTransformation):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    return step


def held_bytes(state: Any) -> dict[str, Any]:
    """Bytes of state per device, read from the arrays' addressable shards, and the totals."""
    per_device = {str(d.id): 0 for d in jax.devices()}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[str(shard.device.id)] += shard.data.nbytes
    leaves = jax.tree.leaves(state)
    return {
        "per_device": sorted(set(per_device.values())),
        "array_bytes": sum(leaf.nbytes for leaf in leaves if leaf.ndim > 0),
        "scalar_bytes": sum(leaf.nbytes for leaf in leaves if leaf.ndim == 0),
    }


def round_trip(state: Any, shardings: Any, directory: Path) -> dict[str, bool]:
    target = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), state, shardings
    )
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory, state)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(directory, target)
    pairs = list(zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True))
    return {
        "same_structure": jax.tree.structure(restored) == jax.tree.structure(state),
        "same_values": all(np.array_equal(a, b) for a, b in pairs),
        "same_shardings": all(a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in pairs),
    }


def zero(mesh: Mesh, directory: Path) -> dict:
    """Per optimizer: ZeRO-1 on ``mesh`` against one device, from the same params and gradients."""
    rng = np.random.default_rng(1)
    host = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in ZERO_PARAMS.items()}
    grads = [
        {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in host.items()}
        for _ in range(ZERO_STEPS)
    ]
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(host, replicated)
    report = {}
    for name, build in ZERO_OPTIMIZERS.items():
        tx = build()
        shardings = optkit.state_sharding(tx, params, mesh=mesh)
        state = jax.jit(tx.init, out_shardings=shardings)(params)
        step = jax.jit(
            _train_step(tx),
            in_shardings=(replicated, shardings, replicated),
            out_shardings=(replicated, shardings),
        )
        ours = params
        for g in grads:
            ours, state = step(ours, state, jax.device_put(g, replicated))
        theirs, their_state = host, tx.init(host)
        single = jax.jit(_train_step(tx))
        for g in grads:
            theirs, their_state = single(theirs, their_state, g)
        ours_leaves = jax.tree.leaves((ours, state))
        pairs = list(zip(ours_leaves, jax.tree.leaves((theirs, their_state)), strict=True))
        report[name] = {
            "specs": {
                jax.tree_util.keystr(path): spec_of(leaf)
                for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            },
            "differing": sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in pairs),
            "max_relative": max(
                float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                / max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-30)
                for a, b in pairs
            ),
            "bytes": held_bytes(state),
        }
        if name != "adamw":
            report[name]["orbax"] = round_trip(state, shardings, directory / name)
    return report


def main(checkpoint_dir: str) -> None:
    report: dict[str, Any] = {}
    for kind, make in MESHES.items():
        mesh = make()
        report[kind] = {
            "axis_types": [str(t) for t in mesh.axis_types],
            "placements": placements(mesh),
            "zero": zero(mesh, Path(checkpoint_dir).absolute() / kind),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
