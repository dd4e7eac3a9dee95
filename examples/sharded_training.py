"""Data-parallel training with sharded parameters and optimizer state, on every device jax sees.

A 2-D device mesh ``("data", "model")`` splits the work two ways:

- **data parallel**: each batch is split over the ``data`` axis; each device computes the
  gradient of its slice and XLA inserts the all-reduce;
- **sharded state**: large leaves (the wide hidden layer's kernels and bias) are split over the
  ``model`` axis, small ones are replicated. ``jax.jit(tx.init)`` gives every optimizer buffer
  (AdamW's two moments) its parameter's sharding, so each device stores only its shard of the
  parameters *and* of the optimizer state.

The step is jitted with donated params and state: XLA writes the new values into the old
buffers, so the optimizer needs no second copy of the state.

On a machine with one CPU, simulate devices (XLA splits the host into N devices)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/sharded_training.py
    python examples/sharded_training.py --simulate-devices 8   # the same, set by the script

XLA reads ``XLA_FLAGS`` when jax starts its backend, on the first ``jax.devices()`` or
computation: set it before that (safest: before importing jax). With 8 devices the mesh is
4 (data) x 2 (model); on one device it is 1 x 1 and the same code runs unsharded.

Run it::

    python examples/sharded_training.py --simulate-devices 8           # 30 epochs
    python examples/sharded_training.py --simulate-devices 8 --quick   # 2 epochs, for tests

It writes its metrics (shardings, losses) to ``outputs/sharded_training.json`` (gitignored;
``--out DIR`` for another folder).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm
from train_digits import cross_entropy, load_data, make_optimizer

import optkit

DEFAULT_EPOCHS = 30
QUICK_EPOCHS = 2
BATCH_SIZE = 96  # divisible by 1, 2, 3, 4, 6 and 8 data shards
LEARNING_RATE = 3e-3
# Leaves with fewer elements than this are replicated: splitting them saves little memory and
# costs communication.
MIN_SHARDED_SIZE = 1024
# Outputs go to a gitignored folder.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs"
METRICS = "sharded_training.json"


class WideMLP(nn.Module):
    """One wide hidden layer, whose (64, 1024) and (1024, 10) kernels are worth sharding."""

    hidden: int = 1024
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


def simulate_devices(count: int) -> None:
    """Make XLA split the host CPU into ``count`` devices; must run before jax's backend starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    jax.config.update("jax_platforms", "cpu")
    if len(jax.devices()) != count:
        raise RuntimeError(
            f"asked for {count} simulated devices, got {len(jax.devices())}: jax had already "
            "started its backend. Set XLA_FLAGS before the first jax computation."
        )


def make_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A ``data`` x ``model`` mesh: 2-way model sharding when the device count is even."""
    model = 2 if len(devices) % 2 == 0 else 1
    shape = (len(devices) // model, model)
    # Auto axes: XLA propagates shardings through the step from those of its inputs.
    return jax.make_mesh(shape, ("data", "model"), (AxisType.Auto,) * 2, devices=devices)


def partition_spec(leaf: Any, mesh: Mesh) -> P:
    """Split a large leaf's longest dimension over ``model``; replicate everything else."""
    model = mesh.shape["model"]
    if leaf.size < MIN_SHARDED_SIZE or model == 1:
        return P()
    axis = int(np.argmax(leaf.shape))
    if leaf.shape[axis] % model:
        return P()
    return P(*[("model" if i == axis else None) for i in range(leaf.ndim)])


def describe(tree: Any, title: str) -> dict[str, dict[str, Any]]:
    """Print every array leaf's path, global shape, sharding and per-device shard shape."""
    print(title)
    specs = {}
    for path, leaf in jax.tree.leaves_with_path(tree):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        spec = leaf.sharding.spec if isinstance(leaf.sharding, NamedSharding) else leaf.sharding
        shard_shape = leaf.sharding.shard_shape(leaf.shape)
        specs[name] = {"spec": str(spec), "shape": leaf.shape, "shard_shape": shard_shape}
        print(f"  {name:<48} {leaf.dtype!s:<8} {leaf.shape!s:<12} {spec!s:<22} {shard_shape}")
    return specs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS}")
    parser.add_argument("--seed", type=int, default=0, help="data split, init and shuffling")
    parser.add_argument(
        "--simulate-devices",
        type=int,
        default=None,
        metavar="N",
        help="split the host CPU into N devices (sets XLA_FLAGS before jax starts)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for {METRICS} (default: outputs/)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({QUICK_EPOCHS} epochs) for tests"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train on a mesh of all devices; print the shardings and the loss; return the metrics."""
    args = parse_args(argv)
    if args.simulate_devices is not None:
        simulate_devices(args.simulate_devices)
    epochs = args.epochs
    if epochs is None:
        epochs = QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS
    start = time.perf_counter()

    mesh = make_mesh(jax.devices())
    print(f"{len(jax.devices())} {jax.devices()[0].platform} devices, mesh {dict(mesh.shape)}")
    batch_sharding = NamedSharding(mesh, P("data"))  # split the batch, replicate the features
    replicated = NamedSharding(mesh, P())

    x_train, x_test, y_train, y_test = load_data(args.seed)
    steps_per_epoch = len(x_train) // BATCH_SIZE
    model = WideMLP()
    tx = make_optimizer(
        optkit.schedules.cosine_annealing_lr(LEARNING_RATE, T_max=epochs * steps_per_epoch)
    )

    # Decide every leaf's sharding from its shape alone (eval_shape allocates nothing), then
    # initialize each parameter directly in its shards.
    def init_params(key):
        return model.init(key, jnp.zeros((1, x_train.shape[1])))["params"]

    param_shardings = jax.tree.map(
        lambda leaf: NamedSharding(mesh, partition_spec(leaf, mesh)),
        jax.eval_shape(init_params, jax.random.key(args.seed)),
    )
    params = jax.jit(init_params, out_shardings=param_shardings)(jax.random.key(args.seed))
    # Every optimizer buffer follows its parameter's sharding; counters are replicated.
    opt_state = jax.jit(tx.init)(params)
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, opt_state)
    param_specs = describe(params, "params (path, dtype, shape, PartitionSpec, shard shape):")
    state_specs = describe(opt_state, "opt_state:")

    def loss_fn(params, images, labels):
        return cross_entropy(model.apply({"params": params}, images), labels)

    # Fixed output shardings keep params and state where they are, so donation reuses buffers.
    @functools.partial(
        jax.jit,
        donate_argnums=(0, 1),
        out_shardings=(param_shardings, state_shardings, replicated),
    )
    def train_step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, images, labels):
        logits = model.apply({"params": params}, images)
        return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, axis=-1) == labels)

    # The evaluation sets are small and need not split evenly: replicate them.
    train_set = jax.device_put((x_train, y_train), replicated)
    test_set = jax.device_put((x_test, y_test), replicated)
    initial_loss = float(evaluate(params, *train_set)[0])
    rng = np.random.default_rng(args.seed)
    progress = tqdm(range(epochs), desc="epochs", unit="epoch")
    for _ in progress:
        order = rng.permutation(len(x_train))
        for i in range(steps_per_epoch):
            batch = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            images, labels = jax.device_put((x_train[batch], y_train[batch]), batch_sharding)
            params, opt_state, loss = train_step(params, opt_state, images, labels)
        progress.set_postfix(loss=f"{float(loss):.4f}")

    final_loss = float(evaluate(params, *train_set)[0])
    test_accuracy = float(evaluate(params, *test_set)[1])
    # The state after training is still sharded like the params: nothing was gathered.
    same_shardings = all(
        leaf.sharding == sharding
        for leaf, sharding in zip(
            jax.tree.leaves(opt_state), jax.tree.leaves(state_shardings), strict=True
        )
    )
    metrics = {
        "devices": len(jax.devices()),
        "mesh": dict(mesh.shape),
        "params": param_specs,
        "opt_state": state_specs,
        "state_shardings_kept": same_shardings,
        "initial_train_loss": initial_loss,
        "final_train_loss": final_loss,
        "test_accuracy": test_accuracy,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"train loss {initial_loss:.4f} -> {final_loss:.4f} | test accuracy {test_accuracy:.4f} "
        f"| {epochs} epochs in {metrics['seconds']:.1f}s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
