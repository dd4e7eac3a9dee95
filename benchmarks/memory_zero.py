"""ZeRO-1 per-device optimizer-state bytes on simulated CPU devices (run by benchmarks.memory).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        python -m benchmarks.memory_zero --devices 8 --out zero.json

For each optimizer of ``benchmarks.memory.CONFIGS``, on a one-axis mesh ``("data",)`` of the
devices with the params replicated: ``optkit.state_sharding`` gives the state's shardings; the
per-device bytes are counted three ways that must agree: from each leaf's shard shapes, from
XLA's output size of the compiled ``jit(init, out_shardings=...)``, and from the arrays that
program allocates (every device's addressable shards). Also recorded: the total (unsharded)
state bytes and the leaves left replicated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import optkit
from benchmarks import measure
from benchmarks.memory import CONFIGS
from benchmarks.workloads import transformer, tree_nbytes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_zero", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--devices", type=int, default=8)
    add("--layers", type=int, required=True)
    add("--width", type=int, required=True)
    add("--vocab", type=int, required=True)
    add("--seq-len", type=int, required=True)
    add("--out", type=Path, required=True)
    return parser.parse_args(argv)


def _slice_elements(index: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    return math.prod(len(range(*s.indices(n))) for s, n in zip(index, shape, strict=True))


def per_device_from_shardings(abstract_state: Any, shardings: Any) -> dict[int, int]:
    """Bytes each device holds, from every leaf's sharding (nothing allocated)."""
    totals: dict[int, int] = defaultdict(int)
    for leaf, sharding in zip(
        jax.tree.leaves(abstract_state), jax.tree.leaves(shardings), strict=True
    ):
        itemsize = jnp.dtype(leaf.dtype).itemsize
        for device, index in sharding.devices_indices_map(leaf.shape).items():
            totals[device.id] += _slice_elements(index, leaf.shape) * itemsize
    return dict(totals)


def replicated_leaves(abstract_state: Any, shardings: Any) -> dict[str, Any]:
    """Leaves that stay whole on every device: how many, their bytes, and the largest's path."""
    paths = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    found = [
        (jax.tree_util.keystr(path), math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize)
        for (path, leaf), sharding in zip(paths, jax.tree.leaves(shardings), strict=True)
        if sharding.is_fully_replicated
    ]
    largest = max(found, key=lambda item: item[1], default=(None, 0))
    return {
        "count": len(found),
        "bytes": sum(size for _, size in found),
        "largest_path": largest[0],
        "largest_bytes": largest[1],
    }


def measure_config(name: str, tree: Any, mesh: Mesh) -> dict[str, Any]:
    tx = CONFIGS[name].build()
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), tree
    )
    shardings = optkit.state_sharding(tx, params, mesh=mesh)
    abstract_state = jax.eval_shape(tx.init, tree)
    total = tree_nbytes(abstract_state)
    from_shardings = per_device_from_shardings(abstract_state, shardings)

    # The state straight into its shards: the params are zeros made inside the program (the
    # optimizers' init reads only their shapes), so no replicated copy of them is allocated.
    def init() -> Any:
        return tx.init(jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), tree))

    compiled = jax.jit(init, out_shardings=shardings).lower().compile()
    xla = measure.memory_analysis(compiled)
    state = jax.block_until_ready(compiled())
    allocated: dict[int, int] = defaultdict(int)
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            allocated[shard.device.id] += shard.data.nbytes
    del state
    per_device = max(from_shardings.values())
    if dict(allocated) != from_shardings:
        raise AssertionError(f"{name}: allocated {dict(allocated)} != shardings {from_shardings}")
    return {
        "total_bytes": total,
        "per_device_bytes": {str(device): size for device, size in sorted(allocated.items())},
        "per_device_max_bytes": per_device,
        "xla_init_output_bytes_per_device": xla.get("output_size"),
        "total_over_devices": total / len(mesh.devices.flat),
        "per_device_over_total": per_device / total,
        "replicated": replicated_leaves(abstract_state, shardings),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    devices = jax.devices()
    if len(devices) != args.devices:
        sys.exit(
            f"expected {args.devices} devices, found {len(devices)}: run with XLA_FLAGS="
            f"--xla_force_host_platform_device_count={args.devices} JAX_PLATFORMS=cpu"
        )
    mesh = Mesh(np.asarray(devices), ("data",))
    workload = transformer(args.layers, args.width, args.vocab, args.seq_len)
    results = {
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "mesh": {"data": len(devices)},
        "workload": workload.name,
        "num_params": workload.num_params,
        "param_bytes": workload.param_bytes,
        "optimizers": {name: measure_config(name, workload.tree, mesh) for name in CONFIGS},
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
