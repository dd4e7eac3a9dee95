"""Run in a fresh interpreter with 8 simulated CPU devices (``test_quant_state.py`` starts it):
how ``quantize_state`` places codes and scales, eagerly and under ``jit``. Prints JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import optkit

# rows: split along the first axis, 128 rows (128 blocks) per device: partitioned.
# columns: split along the second axis: a device's share is not contiguous: replicated.
# few_rows: 8 rows of 256 split 8 ways: one block of 256 per device: partitioned; with blocks
# of 512 a device holds half a block: replicated.
SPECS = {
    "rows": ((1024, 256), PartitionSpec("data", None)),
    "columns": ((1024, 256), PartitionSpec(None, "data")),
    "few_rows": ((8, 256), PartitionSpec("data", None)),
}


def spec_of(array: jax.Array) -> list:
    return [list(a) if isinstance(a, tuple) else a for a in array.sharding.spec]


def main() -> None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
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
        eager = tx.init(placed)
        jitted = jax.jit(tx.init)(placed)
        step = jax.jit(tx.update)
        updates, after = step(placed_grads, eager, placed)
        reference_updates, _ = jax.jit(tx.update)(grads, tx.init(host), host)
        report[block_size] = {
            name: {
                "eager": spec_of(eager[0].mu[name].codes),
                "eager_scale": spec_of(eager[0].nu[name].scale),
                "jit_init": spec_of(jitted[0].mu[name].codes),
                "step": spec_of(after[0].nu[name].codes),
                "same_updates": bool(
                    np.array_equal(np.asarray(updates[name]), np.asarray(reference_updates[name]))
                ),
            }
            for name in SPECS
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
