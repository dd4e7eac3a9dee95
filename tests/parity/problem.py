"""A small non-convex problem, written once in torch and once in jax.numpy with identical math.

The parity suite needs gradients that are the same function in both frameworks, so the only
difference between a torch trajectory and an optkit trajectory is the optimizer. The leaves have
ranks 0 to 3 so per-leaf code paths (scalars, broadcasting, global norms) are all exercised, and the
loss is non-convex so momentum and adaptive methods take visibly different paths.

Loss, with ``c`` a fixed target per leaf::

    sum over leaves of sum((p - c)^2 * (1 + WIGGLE * sin(FREQUENCY * p)))
    + 0.1 * scalar * sum(tanh(matrix @ vector))
    + 0.05 * sum(tensor * matrix)          (matrix broadcast over the tensor's first axis)

The curvature goes negative where |p - c| is near 1, which the trajectories cross. A stronger
wiggle (0.5 * sin(3 p)) made nearby float32 trajectories diverge tenfold within 30 steps, so
float32 parity would have measured chaos rather than the optimizer.

torch is imported inside the torch functions only: the golden-file tests run without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    import torch

SEED = 20240514
WIGGLE = 0.3  # Amplitude of the non-convex factor; its sign stays positive (1 +- 0.3).
FREQUENCY = 2.0
LEAF_SHAPES: dict[str, tuple[int, ...]] = {
    "scalar": (),
    "vector": (4,),
    "matrix": (3, 4),
    "tensor": (2, 3, 4),
}

NumpyTree = dict[str, np.ndarray]


def _draw() -> tuple[NumpyTree, NumpyTree]:
    """Initial params and targets in float64, fixed by ``SEED``.

    Each target sits 0.5 to 1.5 away from its initial value, so no gradient entry starts near zero:
    a near-zero float32 gradient has an unreliable sign, and Adam's first step is sign(g) * lr.
    """
    rng = np.random.default_rng(SEED)
    init, targets = {}, {}
    for name, shape in LEAF_SHAPES.items():
        init[name] = rng.normal(size=shape)
        offset = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        targets[name] = init[name] + offset
    return init, targets


_INIT, _TARGETS = _draw()


def initial_params(dtype: np.dtype | type) -> NumpyTree:
    """Fresh copies of the initial params in ``dtype`` (float32 or float64)."""
    return {name: np.asarray(value, dtype=dtype) for name, value in _INIT.items()}


def jax_loss(params: Mapping[str, jax.Array]) -> jax.Array:
    """The loss in jax.numpy; constants take each leaf's dtype so float32 stays float32."""
    total = jnp.zeros((), dtype=params["scalar"].dtype)
    for name, p in params.items():
        c = jnp.asarray(_TARGETS[name], dtype=p.dtype)
        total = total + jnp.sum((p - c) ** 2 * (1.0 + WIGGLE * jnp.sin(FREQUENCY * p)))
    matrix, vector = params["matrix"], params["vector"]
    total = total + 0.1 * params["scalar"] * jnp.sum(jnp.tanh(matrix @ vector))
    return total + 0.05 * jnp.sum(params["tensor"] * matrix)


def torch_loss(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The same loss in torch, term for term."""
    import torch

    total = torch.zeros((), dtype=params["scalar"].dtype)
    for name, p in params.items():
        c = torch.as_tensor(_TARGETS[name], dtype=p.dtype)
        total = total + torch.sum((p - c) ** 2 * (1.0 + WIGGLE * torch.sin(FREQUENCY * p)))
    matrix, vector = params["matrix"], params["vector"]
    total = total + 0.1 * params["scalar"] * torch.sum(torch.tanh(matrix @ vector))
    return total + 0.05 * torch.sum(params["tensor"] * matrix)


jax_value_and_grad = jax.jit(jax.value_and_grad(jax_loss))
"""Jitted ``params -> (loss, grads)``; compiled once per dtype and shared by every parity case."""


def jax_loss_and_grads(params: Mapping[str, Any]) -> tuple[float, NumpyTree]:
    """Loss and gradients at ``params`` (numpy or jax arrays), computed by jax, as numpy."""
    loss, grads = jax_value_and_grad({k: jnp.asarray(v) for k, v in params.items()})
    return float(loss), {name: np.asarray(g) for name, g in grads.items()}


def torch_loss_and_grads(params: Mapping[str, np.ndarray]) -> tuple[float, NumpyTree]:
    """Loss and gradients at ``params`` (numpy arrays), computed by torch autograd, as numpy."""
    import torch

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    loss = torch_loss(leaves)
    loss.backward()
    return float(loss.detach()), {name: p.grad.numpy() for name, p in leaves.items()}
