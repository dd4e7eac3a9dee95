"""The dtype rules (docs/dtypes.md), for every registry optimizer and the primitives and wrappers.

* params must be floating or complex: integer and bool params are a ValueError at ``init``;
* gradients must be floating or complex: integer and bool gradients are a ValueError at ``update``;
* a gradient of a lower precision than its param (float16 on float32) is promoted: the update is
  computed in the param's dtype; a wider one (float64 on float32), or a complex gradient on a
  real param, is a ValueError (torch requires a gradient of its param's dtype);
* Python float leaves work as 0-d arrays (JAX's default float dtype), as in optax.

Each error names the leaf. Numeric rows: float16 gradients give the update of the same values in
float32 (torch's, for Adam's large-gradient example), and Python floats the update of 0-d arrays
(the path the parity suite checks against torch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.reliability.table import Refused, check_refused, params_of
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import REGISTRY
from tests.support.torch_oracle import require_torch

W = np.array([0.5, -1.0, 2.0])
G = np.array([0.3, -0.2, 0.7])


def _loss(params):
    return sum(jnp.sum(jnp.asarray(p) ** 2) for p in jax.tree.leaves(params))


def _step(info: OptimizerInfo, params, grads):
    tx = info.make(learning_rate=0.01)
    return tx.update(grads, tx.init(params), params, **info.update_args(_loss))[0]


def _init(info: OptimizerInfo, params):
    return lambda: info.make(learning_rate=0.01).init(params)


def _per_row() -> list[Refused]:
    rows = []
    for info in REGISTRY:
        f32 = {"w": jnp.asarray(W, jnp.float32)}
        rows += [
            Refused(
                f"{info.name}-int-params",
                _init(info, {"w": jnp.asarray([1, 2, 3], jnp.int32)}),
                ValueError,
                ("'w'", "int32", "floating"),
            ),
            Refused(
                f"{info.name}-bool-params",
                _init(info, {"w": jnp.ones(3, bool)}),
                ValueError,
                ("'w'", "bool"),
            ),
            Refused(
                f"{info.name}-int-gradients",
                lambda info=info, f32=f32: _step(info, f32, {"w": jnp.asarray([1, 0, -1])}),
                ValueError,
                ("'w'", "int", "truncated"),
            ),
            Refused(
                f"{info.name}-float64-gradients-on-float32",
                lambda info=info, f32=f32: _step(info, f32, {"w": jnp.asarray(G, jnp.float64)}),
                ValueError,
                ("'w'", "float64", "float32"),
            ),
        ]
        if info.matrix_functions:
            continue  # Muon's row routes leaves by a labels function that reads ``p.ndim``.
        rows.append(
            Refused(
                f"{info.name}-python-int-param",
                _init(info, {"w": 3}),
                ValueError,
                ("'w'", "Python int"),
            )
        )
    return rows


_F32 = {"w": jnp.asarray(W, jnp.float32)}
_INTS = {"w": jnp.asarray([1, 0, -1], jnp.int32)}


def _update(tx, grads, params=_F32):
    return lambda: tx.update(grads, tx.init(params), params)


PRIMITIVES = [
    Refused("clip-int", _update(optkit.clip(1.0), _INTS), ValueError, ("'w'", "int32")),
    Refused(
        "clip_by_global_norm-int",
        _update(optkit.clip_by_global_norm(1.0), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused("scale-int", _update(optkit.scale(0.5), _INTS), ValueError, ("'w'", "int32")),
    Refused(
        "add_decayed_weights-int",
        _update(optkit.add_decayed_weights(0.1), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "add_decayed_weights-float64-on-float32",
        _update(optkit.add_decayed_weights(0.1), {"w": jnp.asarray(G, jnp.float64)}),
        ValueError,
        ("'w'", "float64", "float32"),
    ),
    Refused(
        "trace-int", _update(optkit.trace(0.9), _INTS), ValueError, ("'w'", "int32", "truncated")
    ),
    Refused(
        "grad_scaler-int",
        _update(optkit.grad_scaler(optkit.sgd(0.1)), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "accumulate_gradients-int",
        _update(optkit.accumulate_gradients(optkit.sgd(0.1), 2), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "accumulate_gradients-int-params",
        lambda: optkit.accumulate_gradients(optkit.sgd(0.1), 2).init(_INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "weight_averaging-int",
        _update(optkit.weight_averaging(optkit.sgd(0.1), decay=0.9), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "weight_averaging-int-params",
        lambda: optkit.weight_averaging(optkit.sgd(0.1), decay=0.9).init(_INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "flatten-int-params",
        lambda: optkit.flatten(optkit.sgd(0.1)).init(_INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "flatten-int",
        _update(optkit.flatten(optkit.sgd(0.1)), _INTS),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "flatten-float64-on-float32",
        _update(optkit.flatten(optkit.adam(0.1)), {"w": jnp.asarray(G, jnp.float64)}),
        ValueError,
        ("'w'", "float64", "float32"),
    ),
    Refused(
        "param_groups-int-params",
        lambda: optkit.param_groups(optkit.adam, [{"params": ["w"]}], learning_rate=0.1).init(
            _INTS
        ),
        ValueError,
        ("'w'", "int32"),
    ),
    Refused(
        "scale_by_adam-int-state",
        lambda: optkit.scale_by_adam().update(
            {"w": jnp.asarray(G, jnp.float32)}, optkit.scale_by_adam().init(_INTS)
        ),
        ValueError,
        ("'w'", "int32", "optimizer state"),
    ),
]


@pytest.mark.parametrize("row", params_of(_per_row() + PRIMITIVES))
def test_refused(row: Refused) -> None:
    check_refused(row)


# --- promotion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_float16_gradients_are_promoted(info: OptimizerInfo) -> None:
    """float16 gradients on float32 params: the update of the same values in float32, in
    float32 (the exact conversion: every float16 is a float32)."""
    params = {"w": jnp.asarray(W, jnp.float32), "m": jnp.asarray(np.outer(W, G), jnp.float32)}
    half = {"w": jnp.asarray(G * 400, jnp.float16), "m": jnp.asarray(np.outer(G, W), jnp.float16)}
    widened = jax.tree.map(lambda g: g.astype(jnp.float32), half)
    promoted, expected = _step(info, params, half), _step(info, params, widened)
    for leaf in jax.tree.leaves(promoted):
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
    jax.tree.map(np.testing.assert_array_equal, promoted, expected)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_large_float16_gradients_keep_training(name: str) -> None:
    """|g| >= 256 squares past float16's range; promoted, Adam's first step is -lr * sign(g)
    (RMSprop's -lr / sqrt(1 - alpha), Adagrad's -lr), as torch computes from float32 grads."""
    grads = jnp.asarray([300.0, -1000.0, 60000.0], jnp.float16)
    params = jnp.zeros(3, jnp.float32)
    tx = getattr(optkit, name)(0.1)
    updates = tx.update(grads, tx.init(params), params)[0]
    scale = {"adam": 1.0, "rmsprop": 1 / np.sqrt(1 - 0.99), "adagrad": 1.0}[name]
    np.testing.assert_allclose(np.asarray(updates), -0.1 * scale * np.array([1, -1, 1]), rtol=1e-5)


@pytest.mark.torch
def test_large_float16_gradients_match_torch() -> None:
    torch = require_torch()
    grads = np.array([300.0, -1000.0, 60000.0], np.float16)
    p = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    p.grad = torch.tensor(grads).float()  # torch needs the gradient in the param's dtype
    torch.optim.Adam([p], lr=0.1).step()
    tx = optkit.adam(0.1)
    params = jnp.zeros(3, jnp.float32)
    updates = tx.update(jnp.asarray(grads), tx.init(params), params)[0]
    np.testing.assert_allclose(np.asarray(updates), p.detach().numpy(), rtol=1e-6)


# --- Python float leaves -----------------------------------------------------------------------


# optkit.flatten refuses the optimizers whose math depends on each leaf's shape.
FLATTENED = [info for info in REGISTRY if info.flatten or info.closure]


@pytest.mark.parametrize(
    ("info", "path"),
    [pytest.param(info, "per-leaf", id=info.name) for info in REGISTRY]
    + [pytest.param(info, "flatten", id=f"{info.name}-flatten") for info in FLATTENED],
)
def test_python_float_leaves_are_0d_arrays(info: OptimizerInfo, path: str) -> None:
    """``{"w": 0.5}`` trains as a 0-d array of JAX's default float dtype (the parity suite's
    ``scalar`` leaf checks that path against torch): params, gradients and apply_updates."""
    wrap = optkit.flatten if path == "flatten" else (lambda tx: tx)
    matrix = jnp.asarray(np.outer(W, G))  # Muon's leaf; a matrix for every optimizer
    default = jnp.result_type(float)

    def run(scalar):
        tx = wrap(info.make(learning_rate=0.01))
        params = {"w": scalar(0.5), "m": matrix}
        state = tx.init(params)
        for _ in range(3):
            grads = {"w": scalar(0.3), "m": matrix * 0.1}
            updates, state = tx.update(grads, state, params, **info.update_args(_loss))
            params = optkit.apply_updates(params, updates)
        return params

    python, arrays = run(float), run(lambda x: jnp.asarray(x, default))
    assert python["w"].shape == () and python["w"].dtype == default
    assert float(python["w"]) != 0.5
    jax.tree.map(np.testing.assert_array_equal, python, arrays)
