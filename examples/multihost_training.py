"""Multi-process data-parallel training with ZeRO-1 optimizer state, checkpointed with orbax.

JAX's multi-controller runtime runs one Python process per host, each driving its local devices;
``jax.distributed.initialize`` connects them, and every ``jax.jit`` program then spans all the
devices of all the processes (one global mesh). Here:

- the params (a small MLP) are replicated on every device and each batch is split over the
  ``data`` axis (each device computes the gradient of its rows; XLA all-reduces them);
- AdamW's state is partitioned over ``data`` with :func:`optkit.state_sharding` (ZeRO-1): each
  device holds 1/d of the moments and computes that part of the update;
- after half the steps the params and the sharded state are saved with orbax (every process
  writes its own shards) and restored into the same shardings, and training resumes from the
  restored copy.

Launch on real hosts: one process per host, each told the coordinator (process 0's host and a
free port), the number of processes and its own id through the environment::

    # on host 0                                   # on host 1
    export JAX_COORDINATOR_ADDRESS=host0:12345    export JAX_COORDINATOR_ADDRESS=host0:12345
    export JAX_NUM_PROCESSES=2                    export JAX_NUM_PROCESSES=2
    export JAX_PROCESS_ID=0                       export JAX_PROCESS_ID=1
    python examples/multihost_training.py --checkpoint-dir /shared/ckpt

The checkpoint folder must be one every host can reach (a shared file system or a bucket path
orbax supports). Without ``JAX_NUM_PROCESSES`` (or with 1) the script runs in one process on the
devices it sees.

On one machine, ``--local-processes 2`` starts the processes itself on localhost (a free port, CPU
devices, gloo collectives, ``--cpu-devices`` each), waits for them with a time limit and kills
them if anything fails::

    python examples/multihost_training.py --local-processes 2 --cpu-devices 4
    python examples/multihost_training.py --local-processes 2 --cpu-devices 4 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optkit

IN_FEATURES, HIDDEN, OUT_FEATURES = 32, 256, 8
BATCH_SIZE = 64  # divisible by every data-axis size up to 8 (and 16, 32, 64)
DEFAULT_STEPS, QUICK_STEPS = 100, 10
LEARNING_RATE = 1e-2
LAUNCH_TIMEOUT_S = 240.0


# --- the training run, in every process -------------------------------------------------------


def init_params(seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The MLP's initial params, the same NumPy draw in every process."""
    rng = np.random.default_rng(seed)
    return {
        "hidden": {
            "kernel": rng.normal(size=(IN_FEATURES, HIDDEN)).astype(np.float32) / 6,
            "bias": np.zeros(HIDDEN, np.float32),
        },
        "out": {
            "kernel": rng.normal(size=(HIDDEN, OUT_FEATURES)).astype(np.float32) / 16,
            "bias": np.zeros(OUT_FEATURES, np.float32),
        },
    }


def batch(seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s global batch: a fixed random teacher's outputs on fresh inputs."""
    teacher = np.random.default_rng(seed + 1).normal(size=(IN_FEATURES, OUT_FEATURES))
    x = np.random.default_rng((seed, step)).normal(size=(BATCH_SIZE, IN_FEATURES))
    return x.astype(np.float32), np.tanh(x @ teacher).astype(np.float32)


def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return jnp.mean((hidden @ params["out"]["kernel"] + params["out"]["bias"] - y) ** 2)


def global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds: each fills its own devices' shards."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def local_values(tree: Any) -> Any:
    """A replicated global tree as NumPy arrays, read from this process's first shard."""
    return jax.tree.map(lambda leaf: np.asarray(leaf.addressable_shards[0].data), tree)


def state_bytes_per_device(state: Any) -> dict[str, int]:
    """Bytes of optimizer state held by each of this process's devices."""
    held: dict[str, int] = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            key = str(shard.device.id)
            held[key] = held.get(key, 0) + shard.data.nbytes
    return held


def train(steps: int, checkpoint_dir: Path, seed: int = 0) -> dict[str, Any]:
    """``steps`` AdamW steps with ZeRO-1 state over every device of every process; the params
    and state are saved and restored with orbax after ``steps // 2`` steps."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P("data"))
    params = jax.tree.map(lambda v: global_array(v, replicated), init_params(seed))
    param_shardings = jax.tree.map(lambda _: replicated, params)

    tx = optkit.adamw(LEARNING_RATE, weight_decay=1e-2)
    state_shardings = optkit.state_sharding(tx, params, mesh=mesh)
    opt_state = jax.jit(tx.init, out_shardings=state_shardings)(params)

    def step_fn(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    step = jax.jit(
        step_fn,
        in_shardings=(param_shardings, state_shardings, rows, rows),
        out_shardings=(param_shardings, state_shardings, replicated),
        donate_argnums=(0, 1),
    )

    losses, restored_equal = [], None
    for index in range(steps):
        x, y = batch(seed, index)
        params, opt_state, loss = step(
            params, opt_state, global_array(x, rows), global_array(y, rows)
        )
        losses.append(float(local_values(loss)))
        if index + 1 == steps // 2:
            params, opt_state, restored_equal = save_and_restore(checkpoint_dir, params, opt_state)
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "losses": losses,
        "params": jax.tree.map(lambda a: a.tolist(), local_values(params)),
        "state_bytes_total": sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state)),
        "state_bytes_per_device": state_bytes_per_device(opt_state),
        "restored_equal": restored_equal,
    }


def save_and_restore(checkpoint_dir: Path, params: Any, opt_state: Any) -> tuple[Any, Any, bool]:
    """Save with orbax (every process writes its shards), restore into the same shardings, and
    check that this process's shards came back bit for bit."""
    tree = {"params": params, "opt_state": opt_state}
    saved = [np.asarray(s.data) for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards]
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree
    )
    path = Path(checkpoint_dir).absolute() / "step"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree, force=True)  # a rerun overwrites its checkpoint
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(path, target)
    same_placement = all(
        r.sharding.is_equivalent_to(t.sharding, r.ndim)
        for r, t in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True)
    )
    back = [
        np.asarray(s.data) for leaf in jax.tree.leaves(restored) for s in leaf.addressable_shards
    ]
    same_values = all(np.array_equal(a, b) for a, b in zip(saved, back, strict=True))
    return restored["params"], restored["opt_state"], same_placement and same_values


# --- starting the processes -------------------------------------------------------------------


def configure_cpu(devices: int) -> None:
    """Run on ``devices`` CPU devices with gloo collectives (before jax's backend starts)."""
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize_from_environment() -> None:
    """Join the other processes if ``JAX_NUM_PROCESSES`` says there are any."""
    count = int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    if count > 1:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=count,
            process_id=int(os.environ["JAX_PROCESS_ID"]),
            initialization_timeout=60,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_local(
    processes: int,
    cpu_devices: int,
    steps: int,
    workdir: Path,
    timeout: float = LAUNCH_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run this script in ``processes`` processes on localhost and return each one's metrics.

    Each child gets its own process group; if one fails or the time runs out, every child
    still running is killed, and the error shows the failed children's output.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    children = []
    try:
        for index in range(processes):
            env = {
                **os.environ,
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(processes),
                "JAX_PROCESS_ID": str(index),
            }
            env.pop("XLA_FLAGS", None)  # a forced device count would override --cpu-devices
            # The children import the optkit this process imported (a checkout or an install).
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(Path(optkit.__file__).parents[1]), env.get("PYTHONPATH")])
            )
            log = open(workdir / f"process{index}.log", "w")  # noqa: SIM115 (closed below)
            command = [sys.executable, str(Path(__file__).absolute()), "--cpu-devices"]
            command += [str(cpu_devices), "--steps", str(steps)]
            command += ["--checkpoint-dir", str(workdir / "checkpoint")]
            command += ["--out", str(workdir / f"process{index}.json")]
            child = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            children.append((child, log))
        _wait(children, time.monotonic() + timeout, workdir)
    finally:
        for child, log in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
            log.close()
    return [json.loads((workdir / f"process{i}.json").read_text()) for i in range(processes)]


def _wait(children: list[tuple[subprocess.Popen, Any]], deadline: float, workdir: Path) -> None:
    while any(child.poll() is None for child, _ in children):
        failed = [child for child, _ in children if child.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    codes = [child.poll() for child, _ in children]
    if all(code == 0 for code in codes):
        return
    timed_out = time.monotonic() > deadline
    reasons = []
    for index, code in enumerate(codes):
        output = (workdir / f"process{index}.log").read_text()[-3000:]
        if code is not None:
            state = f"exit code {code}"
        else:
            state = "timed out" if timed_out else "still running when another failed; killed"
        reasons.append(f"--- process {index}: {state} ---\n{output}")
    raise RuntimeError("multihost_training: a process failed.\n" + "\n".join(reasons))


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, for tests")
    parser.add_argument("--local-processes", type=int, default=0, help="start N processes here")
    parser.add_argument("--cpu-devices", type=int, default=0, help="CPU devices per process")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    return args


def main(argv: Sequence[str] | None = None) -> Any:
    args = parse_args(argv)
    if args.local_processes:
        with tempfile.TemporaryDirectory() as workdir:
            results = launch_local(
                args.local_processes, args.cpu_devices or 4, args.steps, Path(workdir)
            )
        first = results[0]
        print(
            f"{len(results)} processes, {first['devices']} devices: loss "
            f"{first['losses'][0]:.4f} -> {first['losses'][-1]:.4f}; optimizer state "
            f"{first['state_bytes_total']} bytes, {max(first['state_bytes_per_device'].values())} "
            f"per device; checkpoint restored exactly: {all(r['restored_equal'] for r in results)}"
        )
        return results
    if args.cpu_devices:
        configure_cpu(args.cpu_devices)
    initialize_from_environment()
    if args.checkpoint_dir is None:
        raise SystemExit("--checkpoint-dir is needed (a folder every process can reach)")
    metrics = train(args.steps, args.checkpoint_dir)
    if args.out is not None:
        args.out.write_text(json.dumps(metrics))
    if jax.process_index() == 0:
        print(f"loss {metrics['losses'][0]:.4f} -> {metrics['losses'][-1]:.4f}")
    return metrics


if __name__ == "__main__":
    main()
