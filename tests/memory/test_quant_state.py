"""``quantize_state``'s state as a pytree of arrays: one compilation, orbax round trips, inside
and around ``param_groups`` and ``inject_hyperparams``, and shardings on 8 simulated devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import optkit

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"w": jnp.ones((64, 256), jnp.float32), "bias": jnp.full((256,), 0.5, jnp.float32)}


def gradients(step: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(step)
    return {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in PARAMS.items()}


def train(tx: optkit.GradientTransformation, steps: range, params=PARAMS, state=None):
    step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
    state = tx.init(params) if state is None else state
    for index in steps:
        params, state = step(params, state, gradients(index))
    return params, state, step


def _apply(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optkit.apply_updates(params, updates), state


def test_a_jitted_step_compiles_once_and_a_restored_state_resumes_bitwise(tmp_path):
    tx = optkit.quantize_state(optkit.adamw(1e-2), bits=4)
    params, state, step = train(tx, range(3))
    assert step._cache_size() == 1
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "state", jax.eval_shape(tx.init, PARAMS))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for ours, theirs in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    continued, _, _ = train(tx, range(3, 5), params, state)
    resumed, _, _ = train(tx, range(3, 5), params, restored)
    jax.tree.map(np.testing.assert_array_equal, resumed, continued)


def adamw_8bit(learning_rate: float = 1e-2, weight_decay: float = 0.1):
    return optkit.quantize_state(optkit.adamw(learning_rate, weight_decay=weight_decay))


def test_inside_and_around_param_groups_agree():
    groups = [{"params": "w"}, {"params": "bias", "weight_decay": 0.0}]
    inside = optkit.param_groups(adamw_8bit, groups, learning_rate=1e-2, weight_decay=0.1)
    around = optkit.quantize_state(
        optkit.param_groups(optkit.adamw, groups, learning_rate=1e-2, weight_decay=0.1)
    )
    quantized_inside = [
        leaf for leaf in jax.tree.leaves(inside.init(PARAMS)) if leaf.dtype == jnp.uint8
    ]
    assert len(quantized_inside) == 2  # mu and nu of "w"
    inside_params, _, _ = train(inside, range(4))
    around_params, _, _ = train(around, range(4))
    jax.tree.map(np.testing.assert_array_equal, inside_params, around_params)


def test_injected_hyperparameters_are_set_without_recompiling():
    tx = optkit.quantize_state(optkit.inject_hyperparams(optkit.adamw)(learning_rate=1e-2))
    params, state, step = train(tx, range(2))
    state = optkit.set_hyperparams(state, learning_rate=0.0)
    frozen, _ = step(params, state, gradients(2))
    jax.tree.map(np.testing.assert_array_equal, frozen, params)  # lr 0: AdamW moves nothing
    assert step._cache_size() == 1


@pytest.fixture(scope="module")
def sharding_report() -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JAX_ENABLE_X64", None)
    script = Path(__file__).with_name("quant_sharding_checks.py")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("block_size", "layout", "expected"),
    [
        ("256", "rows", ["data"]),  # 128 blocks per device
        ("512", "rows", ["data"]),
        ("256", "few_rows", ["data"]),  # one block per device
        ("512", "few_rows", []),  # half a block per device: replicated
        ("256", "columns", [None]),  # a device's share is not contiguous: replicated
    ],
)
def test_codes_and_scales_are_placed_by_whole_blocks(block_size, layout, expected, sharding_report):
    found = sharding_report[block_size][layout]
    assert found["eager"] == expected
    assert found["eager_scale"] == expected
    if expected == ["data"]:  # under jit the compiler keeps first-axis splits
        assert found["jit_init"] == found["step"] == ["data"]
    assert found["same_updates"]  # the sharded step equals the single-device one
