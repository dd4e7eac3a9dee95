"""optkit.flatten's input checks, group keys and large leaves: bad trees fail with the path that is
wrong, and a large leaf costs no copy."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit


def test_mismatched_params_name_the_missing_path() -> None:
    tx = optkit.flatten(optkit.adamw(0.01))
    grads = {"a": jnp.ones(3), "block": {"layers": [jnp.ones(2), jnp.ones(2), jnp.ones(2)]}}
    params = jax.tree.map(jnp.zeros_like, grads)
    del params["block"]["layers"][2]
    with pytest.raises(ValueError, match=r"flatten: .*block/layers/2"):
        tx.update(grads, tx.init(grads), params)


def test_rejects_a_factory() -> None:
    with pytest.raises(TypeError, match=r"flatten: argument 0 is 'function'"):
        optkit.flatten(optkit.adam)


def test_params_and_updates_of_different_dtypes_name_the_leaf() -> None:
    # Grouped by the update's dtype, a bfloat16 param would sit in the float32 vector.
    params = {"b": jnp.zeros(3, jnp.float32), "w": jnp.ones(4, jnp.bfloat16)}
    grads = {"b": jnp.ones(3, jnp.float32), "w": jnp.ones(4, jnp.float32)}
    tx = optkit.flatten(optkit.adamw(0.01))
    state = tx.init(grads)
    # A float32 gradient on a bfloat16 param is refused by the dtype rules (docs/dtypes.md).
    match = r"flatten: updates leaf 'w' is float32 but the params leaf is bfloat16"
    with pytest.raises(ValueError, match=match):
        tx.update(grads, state, params)


def test_a_large_leaf_named_like_a_dtype_keeps_its_own_vector() -> None:
    # "float32" (8 elements) is over max_flat_size and comes first; "z" must not join it.
    params = {
        "float32": jnp.arange(8.0, dtype=jnp.float32),
        "z": jnp.arange(2.0, dtype=jnp.float32),
    }
    tx = optkit.flatten(optkit.sgd(0.1, momentum=0.9), max_flat_size=4)
    state = tx.init(params)
    trace = state.inner_state[0].trace
    assert {name: v.shape for name, v in trace.items()} == {"float32": (2,), "float32#": (8,)}

    per_leaf = optkit.sgd(0.1, momentum=0.9)
    reference_state = per_leaf.init(params)
    for _ in range(3):
        grads = jax.tree.map(lambda p: p * 0.5 + 1.0, params)
        updates, state = tx.update(grads, state, params)
        expected, reference_state = per_leaf.update(grads, reference_state, params)
        jax.tree.map(np.testing.assert_array_equal, updates, expected)
        params = optkit.apply_updates(params, updates)


def test_a_group_past_int32_offsets_is_refused_at_init() -> None:
    # Shapes only (no memory): two leaves of 2**30 + 1 elements concatenated overflow int32.
    half = jax.ShapeDtypeStruct((2**30 + 1,), jnp.float32)
    tx = optkit.flatten(optkit.sgd(0.1), max_flat_size=None)
    with pytest.raises(ValueError, match=r"flatten: the float32 leaves hold 2147483650 elements"):
        jax.eval_shape(tx.init, {"a": half, "b": half})
    # The default max_flat_size keeps them apart, so the same tree is fine.
    jax.eval_shape(optkit.flatten(optkit.sgd(0.1, momentum=0.9)).init, {"a": half, "b": half})


def test_a_large_leaf_compiles_as_on_the_per_leaf_path() -> None:
    # Raveled to a vector, a 2-D leaf's new param was copied into its donated buffer and its
    # kernels worked on vectors (2-3x slower steps on a transformer). Kept in its shape, it gets
    # the per-leaf path's kernels and no copy.
    params = {"bias": jnp.zeros(8, jnp.float32), "kernel": jnp.ones((64, 32), jnp.float32)}

    def kernel_ops(tx: optkit.GradientTransformation) -> list[str]:
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optkit.apply_updates(params, updates), state

        lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params)
        entry = lowered.compile().as_text().split("ENTRY", 1)[1]
        return re.findall(r"= f32\[(?:64,32|2048)\]\S* (\w+)\(", entry)

    flat_tx = optkit.flatten(optkit.adamw(0.01, weight_decay=0.1), max_flat_size=1000)
    assert flat_tx.init(params).inner_state[0].mu["kernel"].shape == (64, 32)
    per_leaf = kernel_ops(optkit.adamw(0.01, weight_decay=0.1))
    assert "copy" not in per_leaf and per_leaf.count("fusion") >= 1
    assert kernel_ops(flat_tx) == per_leaf
