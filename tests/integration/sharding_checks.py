"""Sharding checks on 8 simulated CPU devices, run as a script by test_sharding.py.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so these checks run in a
fresh interpreter (``python sharding_checks.py GROUP``) that prints one JSON object of observations
for pytest to assert on. Groups:

- ``init``: ``jax.jit(tx.init)`` on model-sharded and data-parallel params, eager ``tx.init`` on
  model-sharded ones, and optax's sgd for comparison;
- ``step``: a jitted train step left to sharding propagation: output shardings, collectives in the
  compiled HLO, the same for the optimizer update alone, compilations in the first steps, and
  ``set_hyperparams`` on sharded state;
- ``abstract``: ``jax.eval_shape(tx.init, ...)`` on a tree too large to materialize, and
  ``jax.jit(tx.init, out_shardings=...)`` built from it.

The default precision (x64 off) is used, as a user's program would.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax
from compile_counter import count_compiles
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_records import (
    buffer_sharding,
    collectives,
    output_bytes,
    param_for,
    param_shardings,
    state_shardings,
    tree_bytes,
    with_sharding,
)

import optkit
from tests.support.registry import BY_NAME, REGISTRY

DEVICES = 8
IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 16, 64, 8, 32

# Every registry row in its typical set-up (every state buffer on), and the combinators.
OPTIMIZERS: dict[str, Callable[[], Any]] = {
    **{info.name: info.make for info in REGISTRY},
    "param_groups": lambda: optkit.param_groups(
        optkit.adamw,
        [{"params": "**/kernel"}, {"params": "**/bias", "weight_decay": 0.0}],
        learning_rate=1e-2,
    ),
    "inject_hyperparams": lambda: optkit.inject_hyperparams(optkit.sgd)(
        learning_rate=0.1, momentum=0.9
    ),
    # The training-loop wrappers together: loss scaling, accumulation, an EMA of the params.
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

# Kernels sharded on one axis, biases replicated (Megatron's column- then row-parallel pair).
MODEL_SHARDED = {
    "l1": {"kernel": P(None, "model"), "bias": P()},
    "l2": {"kernel": P("model", None), "bias": P()},
}
# The column-parallel layer's bias sharded like its output: the layout propagation keeps as is.
MODEL_SHARDED_HIDDEN_BIAS = {
    "l1": {"kernel": P(None, "model"), "bias": P("model")},
    "l2": {"kernel": P("model", None), "bias": P()},
}
REPLICATED = {"l1": {"kernel": P(), "bias": P()}, "l2": {"kernel": P(), "bias": P()}}


def mesh_for(layout: str) -> Mesh:
    axis = "data" if layout == "data_parallel" else "model"
    return Mesh(np.array(jax.devices()), (axis,))


def specs_for(layout: str) -> dict:
    return {
        "model_sharded": MODEL_SHARDED,
        "model_sharded_hidden_bias": MODEL_SHARDED_HIDDEN_BIAS,
        "data_parallel": REPLICATED,
    }[layout]


def make_params(layout: str) -> dict:
    # NumPy draws, placed with device_put: no per-shape jax.random programs to compile.
    rng = np.random.default_rng(0)
    values = {
        "l1": {
            "kernel": rng.normal(size=(IN_FEATURES, HIDDEN)) / 4,
            "bias": rng.normal(size=HIDDEN) / 10,
        },
        "l2": {
            "kernel": rng.normal(size=(HIDDEN, OUT_FEATURES)) / 8,
            "bias": rng.normal(size=OUT_FEATURES) / 10,
        },
    }
    mesh = mesh_for(layout)
    return jax.tree.map(
        lambda v, spec: jax.device_put(v.astype(np.float32), NamedSharding(mesh, spec)),
        values,
        specs_for(layout),
    )


def make_batch(layout: str) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, IN_FEATURES)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(IN_FEATURES, OUT_FEATURES))).astype(np.float32)
    spec = P("data") if layout == "data_parallel" else P()
    sharding = NamedSharding(mesh_for(layout), spec)
    return jax.device_put(x, sharding), jax.device_put(y, sharding)


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    return jnp.mean((hidden @ params["l2"]["kernel"] + params["l2"]["bias"] - y) ** 2)


def update_args(name: str, x: jax.Array, y: jax.Array) -> dict[str, Any]:
    """The extra arguments of ``tx.update`` for row ``name`` (LBFGS: the loss function)."""
    info = BY_NAME.get(name)
    return {} if info is None else info.update_args(lambda params: loss_fn(params, x, y))


# --- groups ----------------------------------------------------------------------------------
# Each layout compiles one program holding every optimizer (a dict keyed by name, each under its
# own named scope): the optimizers share nothing, so every output's sharding is what it would be
# alone, and one compile instead of seven keeps the subprocess fast.


def build_all() -> dict[str, Any]:
    return {name: factory() for name, factory in OPTIMIZERS.items()}


def init_all(txs: dict[str, Any]) -> Callable:
    return jax.jit(lambda params: {name: tx.init(params) for name, tx in txs.items()})


def check_init() -> dict:
    out: dict[str, Any] = {"optkit": {}, "optax": {}}
    txs = build_all()
    for layout in ("model_sharded", "data_parallel"):
        params = make_params(layout)
        states = init_all(txs)(params)
        for name in txs:
            out["optkit"].setdefault(name, {})[layout] = state_shardings(states[name], params)
        # optax for comparison: its buffers are zeros_like(params), which under jit depend on
        # nothing, so XLA drops the params and places the constants on the default device.
        tx = optax.sgd(0.1, momentum=0.9)
        out["optax"][layout] = state_shardings(jax.jit(tx.init)(params), params)
        if layout == "model_sharded":
            out["optax_eager"] = state_shardings(tx.init(params), params)
            out["optkit_eager"] = {
                name: state_shardings(optimizer.init(params), params)
                for name, optimizer in txs.items()
            }
    return out


def step_all(txs: dict[str, Any]) -> Callable:
    """Every optimizer's train step (grad, tx.update, apply_updates) in one program."""

    @jax.jit
    def step(params, states, x, y):
        out = {}
        for name, tx in txs.items():
            with jax.named_scope(name):
                loss, grads = jax.value_and_grad(loss_fn)(params[name], x, y)
                with jax.named_scope("optimizer"):
                    extra = update_args(name, x, y)
                    updates, state = tx.update(grads, states[name], params[name], **extra)
                    new_params = optkit.apply_updates(params[name], updates)
            out[name] = (new_params, state, loss)
        return out

    return step


def update_all(txs: dict[str, Any]) -> Callable:
    """The optimizers' own part of the step alone, on sharded grads, state and params, each
    under its own named scope (LBFGS's part includes the loss evaluations it makes)."""

    @jax.jit
    def update(grads, states, params, x, y):
        out = {}
        for name, tx in txs.items():
            with jax.named_scope(f"update_{name}"):
                out[name] = tx.update(grads, states[name], params, **update_args(name, x, y))
        return out

    return update


@jax.jit
def baseline_step(params, x, y):
    """Gradient descent with no optimizer state: the collectives the model itself needs."""
    grads = jax.grad(loss_fn)(params, x, y)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)


STEP_LAYOUTS = ("model_sharded_hidden_bias", "model_sharded", "data_parallel")


def check_step() -> dict:
    out: dict[str, Any] = {
        "collectives": {},
        "optkit": {name: {} for name in OPTIMIZERS},
    }
    txs = build_all()
    for layout in STEP_LAYOUTS:
        params = make_params(layout)
        x, y = make_batch(layout)
        baseline = None
        if layout == "model_sharded":
            compiled_baseline = baseline_step.lower(params, x, y).compile()
            out["baseline_collectives"] = collectives(compiled_baseline)
            baseline = compiled_baseline.output_shardings
        states = init_all(txs)(params)
        all_params = {name: params for name in txs}
        compiled = step_all(txs).lower(all_params, states, x, y).compile()
        out["collectives"][layout] = collectives(compiled)
        results = None
        if layout != "model_sharded":
            results = [compiled(all_params, states, x, y)]
            for _ in range(2):
                results.append(compiled(*(_next_inputs(results[-1])), x, y))
        for name in txs:
            params_out, state_out, _ = compiled.output_shardings[name]
            record = {
                "params_out": param_shardings(params_out, params),
                "state_out": state_shardings(states[name], params, state_out),
                # State against the params' output shardings: consistent wherever they go.
                "state_out_vs_params_out": state_shardings(
                    states[name], jax.tree.map(with_sharding, params, params_out), state_out
                ),
            }
            if baseline is not None:
                record["params_out_vs_baseline"] = param_shardings(params_out, params, baseline)
            if results is not None:
                new_params, new_state, _ = results[-1][name]
                record["losses"] = [float(r[name][2]) for r in results]
                record["params_after"] = param_shardings(
                    jax.tree.map(lambda a: a.sharding, new_params), params
                )
                record["state_after"] = state_shardings(new_state, params)
            out["optkit"][name][layout] = record
        if layout == "model_sharded_hidden_bias":
            compiled_update = update_all(txs).lower(params, states, params, x, y).compile()
            found = collectives(compiled_update)
            out["update_collectives"] = {
                name: [c for c in found if f"update_{name}/" in c["op_name"]] for name in txs
            }
            out["update_collectives_unattributed"] = [
                c for c in found if not any(f"update_{name}/" in c["op_name"] for name in txs)
            ]
            for name in txs:
                out["optkit"][name][layout]["update_state_out"] = state_shardings(
                    states[name], params, compiled_update.output_shardings[name][1]
                )
    out["first_steps"] = {
        f"{library} {init}": check_first_steps(tx, init)
        for library, tx in (("optkit", optkit.adam(1e-2)), ("optax", optax.adam(1e-2)))
        for init in ("eager", "jit")
    }
    out["set_hyperparams"] = {
        layout: check_set_hyperparams(layout)
        for layout in ("model_sharded_hidden_bias", "data_parallel")
    }
    return out


def check_set_hyperparams(layout: str) -> dict:
    """set_hyperparams on a sharded state: where the new value lands, and whether the jitted
    update compiled before is reused."""
    tx = OPTIMIZERS["inject_hyperparams"]()
    params = make_params(layout)
    update = jax.jit(lambda grads, state, params: tx.update(grads, state, params))
    _, state = update(params, jax.jit(tx.init)(params), params)
    before = state.hyperparams["learning_rate"].sharding
    state = optkit.set_hyperparams(state, learning_rate=0.05)
    after = state.hyperparams["learning_rate"].sharding
    with count_compiles() as compiled:
        update(params, state, params)
    return {
        "before": repr(before),
        "after": repr(after),
        "same": after.is_equivalent_to(before, 0),
        "compiles": len(compiled),
    }


def check_first_steps(tx: Any, init: str) -> list[int]:
    """XLA compilations in each of the first three calls of a fresh jitted train step, with the
    state from eager ``tx.init`` or from ``jax.jit(tx.init)`` on model-sharded params."""
    params = make_params("model_sharded_hidden_bias")
    x, y = make_batch("model_sharded_hidden_bias")
    state = tx.init(params) if init == "eager" else jax.jit(tx.init)(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    counts = []
    for _ in range(3):
        with count_compiles() as compiled:
            params, state = step(params, state)
        counts.append(len(compiled))
    return counts


def _next_inputs(result: dict) -> tuple[dict, dict]:
    return (
        {name: r[0] for name, r in result.items()},
        {name: r[1] for name, r in result.items()},
    )


def huge_abstract_params(mesh: Mesh) -> dict:
    """Four leaves of 2**31 elements (4-8 GiB each): only ever described, never allocated."""

    def sds(shape, dtype, spec):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    return {
        "embed": {"kernel": sds((2**16, 2**15), jnp.float32, P("model", None))},
        "proj": {
            "kernel": sds((2**15, 2**16), jnp.float32, P(None, "model")),
            "bias": sds((2**16,), jnp.float32, P()),
        },
        "flat": {"kernel": sds((2**31,), jnp.bfloat16, P("model"))},
        "head": {"kernel": sds((2**31,), jnp.float32, P("model"))},
    }


def shardings_from_abstract(abstract_state: Any, params: Any, mesh: Mesh) -> Any:
    """``out_shardings`` for ``jit(tx.init)``: each buffer takes its param's sharding (matched by
    key path suffix; on its trailing axes if it has more, as LBFGS's history; replicated along
    axes it reduces to size 1), scalars are replicated."""

    def pick(path, leaf):
        match = param_for(path, params)
        if match is None:
            return NamedSharding(mesh, P())
        return buffer_sharding(match[1].sharding, match[1].shape, leaf.shape)

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def check_abstract() -> dict:
    mesh = mesh_for("model_sharded")
    huge = huge_abstract_params(mesh)
    small = make_params("model_sharded")
    txs = build_all()
    out: dict[str, Any] = {"optkit": {}}

    # Compiling (never running) jit(init) on the huge tree: the shardings XLA picks, and the
    # largest per-device output, without allocating anything.
    compiled = init_all(txs).lower(huge).compile()
    out["output_bytes_per_device"] = output_bytes(compiled)
    out["shard_bytes_per_device"] = sum(
        math.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf, sharding in zip(
            jax.tree.leaves(jax.eval_shape(init_all(txs), huge)),
            jax.tree.leaves(compiled.output_shardings),
            strict=True,
        )
    )
    # optax's momentum under jit, for comparison: the whole state lands on one device.
    momentum = optax.sgd(0.1, momentum=0.9).init
    out["optax_sgd_output_bytes_per_device"] = output_bytes(jax.jit(momentum).lower(huge).compile())
    out["optax_sgd_state_bytes"] = tree_bytes(jax.eval_shape(momentum, huge))

    # jit(tx.init, out_shardings=...) with the shardings derived from an abstract state.
    abstract_small = jax.eval_shape(init_all(txs), small)
    wanted = {name: shardings_from_abstract(abstract_small[name], small, mesh) for name in txs}
    states = jax.jit(init_all(txs), out_shardings=wanted)(small)
    reference = init_all(txs)(small)

    for name, tx in txs.items():
        abstract_state = jax.eval_shape(tx.init, huge)
        out["optkit"][name] = {"state_bytes": tree_bytes(abstract_state)}
        leaves = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state):
            match = param_for(path, huge)
            leaves.append(
                {
                    "path": jax.tree_util.keystr(path),
                    "shape": list(leaf.shape),
                    "dtype": str(leaf.dtype),
                    "param": None if match is None else match[0],
                    "param_shape": None if match is None else list(match[1].shape),
                    "param_dtype": None if match is None else str(match[1].dtype),
                }
            )
        out["optkit"][name] |= {
            "eval_shape": leaves,
            "compiled_shardings": state_shardings(
                abstract_state, huge, compiled.output_shardings[name]
            ),
            "out_shardings_state": state_shardings(states[name], small),
            "out_shardings_honoured": all(
                leaf.sharding.is_equivalent_to(s, leaf.ndim)
                for leaf, s in zip(
                    jax.tree.leaves(states[name]), jax.tree.leaves(wanted[name]), strict=True
                )
            ),
            "out_shardings_same_values": all(
                np.array_equal(a, b)
                for a, b in zip(
                    jax.tree.leaves(states[name]), jax.tree.leaves(reference[name]), strict=True
                )
            ),
        }
    return out


GROUPS = {"init": check_init, "step": check_step, "abstract": check_abstract}


def main(group: str) -> None:
    if jax.device_count() != DEVICES:
        raise SystemExit(f"expected {DEVICES} devices, got {jax.device_count()}")
    print(json.dumps(GROUPS[group]()))


if __name__ == "__main__":
    main(sys.argv[1])
