"""``quantize_state`` around every optimizer of the registry (8 bits, small blocks).

For each row: the quantized leaves are :class:`~optkit.QuantizedBuffer` s holding the map the
state declares (unsigned for its ``non_negative_fields``, signed otherwise), the run stays finite,
and it tracks the float32 run of the same optimizer loosely. Every optimizer works, including
those whose state is not a moment per parameter: L-BFGS's history (quantized per history
buffer, whose blocks run across pairs), Muon's partitioned state and Adafactor's factored
row and column statistics (small buffers; quantized here because ``min_size`` is small).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit.combinators import _block_codes
from tests.support.registry import REGISTRY

BLOCK, MIN_SIZE, STEPS = 64, 64, 5
_rng = np.random.default_rng(0)
PARAMS = {
    "w": jnp.asarray(_rng.standard_normal((64, 64)), jnp.float32),
    "b": jnp.asarray(_rng.standard_normal(64), jnp.float32),
}
TARGET = jax.tree.map(lambda p: 0.5 * p, PARAMS)


def loss_fn(params: dict) -> jax.Array:
    return sum(jnp.sum((params[k] - TARGET[k]) ** 2) for k in params)


def _declares(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(type(node), "non_negative_fields")


def declared_signed(state: Any, signed: bool = True) -> Any:
    """A tree like ``state`` of bools: False for leaves under a declared non-negative field."""

    def leaf(node: Any) -> Any:
        if _declares(node):
            fields = type(node).non_negative_fields
            return type(node)(
                *(
                    declared_signed(value, signed and name not in fields)
                    for name, value in zip(node._fields, node, strict=True)
                )
            )
        return signed

    return jax.tree.map(leaf, state, is_leaf=_declares)


def run(tx: optkit.GradientTransformation, extra: dict, steps: int) -> list:
    """The (params, state) after each of ``steps`` jitted updates (one compiled step)."""

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss_fn)(params), state, params, **extra)
        return optkit.apply_updates(params, updates), state

    out, params, state = [], PARAMS, tx.init(PARAMS)
    for _ in range(steps):
        params, state = step(params, state)
        out.append((params, state))
    return out


@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_every_optimizer_runs_with_its_state_quantized(info):
    extra = info.update_args(loss_fn)
    quantized = run(
        optkit.quantize_state(info.make(), block_size=BLOCK, min_size=MIN_SIZE), extra, STEPS
    )
    reference = run(info.make(), extra, STEPS)

    # After one update from the same start, the quantized state is the float32 state rounded
    # to the map its field declares: within half the map's widest gap of each block's scale.
    # Decoding with the other map would be off by a large fraction of the scale.
    float_state, quant_state = reference[0][1], quantized[0][1]
    signs = declared_signed(float_state)
    pairs = []
    jax.tree.map(
        lambda f, q, s: pairs.append((f, q, s)),
        float_state,
        quant_state,
        signs,
        is_leaf=lambda x: isinstance(x, optkit.QuantizedBuffer),
    )
    stored = [(f, q, s) for f, q, s in pairs if isinstance(q, optkit.QuantizedBuffer)]
    assert stored, f"{info.name}: no buffer of {MIN_SIZE}+ elements was quantized"
    for f, q, signed in stored:
        assert q.codes.dtype == jnp.uint8 and q.codes.shape == (f.size // BLOCK, BLOCK)
        table = _block_codes.quantization_map(8, signed)
        decoded = np.asarray(table)[np.asarray(q.codes)] * np.asarray(q.scale)[:, None]
        blocks = np.asarray(f, np.float32).reshape(-1, BLOCK)
        bound = (np.max(np.diff(table)) / 2 + 1e-6) * np.asarray(q.scale)[:, None]
        assert np.all(np.abs(decoded - blocks) <= bound), (info.name, signed)
    # Every floating buffer of MIN_SIZE+ elements was quantized; the smaller ones were kept.
    for f, q, _ in pairs:
        if not isinstance(q, optkit.QuantizedBuffer):
            assert getattr(f, "size", 0) < MIN_SIZE or not jnp.issubdtype(f.dtype, jnp.floating)

    params, final = quantized[-1][0], reference[-1][0]
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(quantized[-1]))
    # 8-bit state carries ~1% relative error per element near its block's maximum and more for
    # small elements; Adam-like updates divide by the square root of a rounded second moment,
    # so after 5 steps the params may differ from the float32 run's by a few percent of how far
    # those moved (observed at most 5%, Adam/AdamW/SparseAdam). 15% leaves room and still fails
    # for a state decoded with the wrong map or scale (off by tens of percent or more).
    for key in params:
        moved = float(jnp.max(jnp.abs(final[key] - PARAMS[key])))
        deviation = float(jnp.max(jnp.abs(params[key] - final[key])))
        assert deviation <= 0.15 * moved, (info.name, key, deviation / moved)
