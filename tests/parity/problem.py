"""The parity problems: small losses written once, evaluated by torch and by jax.numpy alike.

The parity suite needs gradients that are the same function in both frameworks, so the only
difference between a torch trajectory and an optkit trajectory is the optimizer. Each loss is
written once against an array namespace ``xp`` (``torch`` or ``jax.numpy``: the functions used
have the same names and meaning in both), term by term in a fixed order.

Problems (``PROBLEMS``):

* ``standard``: leaves of ranks 0 to 3, so per-leaf code paths (scalars, broadcasting, global
  norms) are all exercised, and a non-convex loss, so momentum and adaptive methods take visibly
  different paths::

      sum over leaves of sum((p - c)^2 * (1 + WIGGLE * sin(FREQUENCY * p)))
      + 0.1 * scalar * sum(tanh(matrix @ vector))
      + 0.05 * sum(tensor * matrix)          (matrix broadcast over the tensor's first axis)

  The curvature goes negative where |p - c| is near 1, which the trajectories cross. A stronger
  wiggle (0.5 * sin(3 p)) made nearby float32 trajectories diverge tenfold within 30 steps, so
  float32 parity would have measured chaos rather than the optimizer.
* ``matrices``: the same per-leaf terms over 2-D leaves only, of several aspect ratios (square,
  tall, wide, long), coupled through a matrix product; for optimizers of matrices (Muon).
* ``convex``: a smooth, strictly convex loss over leaves of ranks 0 to 2 (quadratic plus
  quartic terms and a squared linear coupling); for line-search methods (LBFGS).
* ``hinge``: the standard leaves under hinge-shaped terms, so gradients have *exact* zeros
  that change from step to step; for SparseAdam, which skips the zero entries::

      sum over leaves of sum(relu(p - c)^2 * (1 + WIGGLE * sin(FREQUENCY * p)))
      + 0.1 * scalar * sum(relu(matrix @ vector - 1))
      + 0.05 * sum(relu(tensor * matrix - 0.25))

  An entry below its target feels no pull of its own (half of them start there); one above it
  descends until it crosses, and its own gradient then drops to exactly zero. ``matrix`` and
  ``vector`` also get gradient through the units ``(matrix @ vector)_i`` that are above 1, and
  ``tensor`` and ``matrix`` through the products above 0.25; units and products switch on and
  off as the params move, so entries leave the zero set as well as join it (SparseAdam's runs
  see 6 to 11 zeros in ``tensor``, 0 to 6 in ``matrix``, 0 or 3 in ``vector``). ``relu(x)`` is
  written ``(x + |x|) / 2``: below zero both frameworks compute ``x + |x|`` and its derivative
  ``1 + sign(x)`` as exactly 0. Whether an entry is zero is a sign test, so it must not be
  decided by rounding: along the parity trajectories every quantity tested stays at least 1e-4
  from its threshold.

``c`` is a fixed target per leaf, 0.5 to 1.5 away from the initial value, so no gradient entry
starts near zero: a near-zero float32 gradient has an unreliable sign, and Adam's first step is
sign(g) * lr. torch is imported inside the torch functions only: the golden-file tests run
without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SEED = 20240514
WIGGLE = 0.3  # Amplitude of the non-convex factor; its sign stays positive (1 +- 0.3).
FREQUENCY = 2.0

NumpyTree = dict[str, np.ndarray]
Terms = Callable[[Any, Mapping[str, Any]], list[Any]]
"""``(xp, params) -> [term, ...]``: a problem's extra loss terms, added in order."""


def _wiggle(xp: Any, p: Any, c: Any) -> Any:
    return xp.sum((p - c) ** 2 * (1.0 + WIGGLE * xp.sin(FREQUENCY * p)))


def _quadratic_quartic(xp: Any, p: Any, c: Any) -> Any:
    return xp.sum((p - c) ** 2) + 0.1 * xp.sum(p**4)


def _relu(xp: Any, x: Any) -> Any:
    """``max(x, 0)`` with exactly zero value and gradient below 0, in torch and jax alike."""
    return 0.5 * (x + xp.abs(x))


def _hinge(xp: Any, p: Any, c: Any) -> Any:
    return xp.sum(_relu(xp, p - c) ** 2 * (1.0 + WIGGLE * xp.sin(FREQUENCY * p)))


class Problem:
    """One parity problem: its leaves, start point, targets and loss in both frameworks."""

    def __init__(
        self,
        name: str,
        leaf_shapes: Mapping[str, tuple[int, ...]],
        per_leaf: Callable[[Any, Any, Any], Any],
        coupling: Terms,
        seed: int = SEED,
    ) -> None:
        self.name = name
        self.leaf_shapes = dict(leaf_shapes)
        self._per_leaf = per_leaf
        self._coupling = coupling
        self._init, self._targets = self._draw(seed)
        self.jax_value_and_grad = jax.jit(jax.value_and_grad(self.jax_loss))
        """Jitted ``params -> (loss, grads)``; compiled once per dtype, shared by every case."""

    def _draw(self, seed: int) -> tuple[NumpyTree, NumpyTree]:
        """Initial params and targets in float64, fixed by ``seed``."""
        rng = np.random.default_rng(seed)
        init, targets = {}, {}
        for name, shape in self.leaf_shapes.items():
            init[name] = rng.normal(size=shape)
            offset = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
            targets[name] = init[name] + offset
        return init, targets

    def initial_params(self, dtype: np.dtype | type) -> NumpyTree:
        """Fresh copies of the initial params in ``dtype`` (float32 or float64)."""
        return {name: np.asarray(value, dtype=dtype) for name, value in self._init.items()}

    def _loss(self, xp: Any, params: Mapping[str, Any], constant: Callable) -> Any:
        first = next(iter(params.values()))
        total = xp.zeros((), dtype=first.dtype)
        for name, p in params.items():
            total = total + self._per_leaf(xp, p, constant(self._targets[name], p.dtype))
        for term in self._coupling(xp, params):
            total = total + term
        return total

    def jax_loss(self, params: Mapping[str, jax.Array]) -> jax.Array:
        """The loss in jax.numpy; constants take each leaf's dtype so float32 stays float32."""
        return self._loss(jnp, params, lambda value, dtype: jnp.asarray(value, dtype=dtype))

    def torch_loss(self, params: Mapping[str, Any]) -> Any:
        """The same loss in torch, term for term."""
        import torch

        return self._loss(torch, params, lambda value, dtype: torch.as_tensor(value, dtype=dtype))

    def jax_loss_and_grads(self, params: Mapping[str, Any]) -> tuple[float, NumpyTree]:
        """Loss and gradients at ``params`` (numpy or jax arrays), computed by jax, as numpy."""
        loss, grads = self.jax_value_and_grad({k: jnp.asarray(v) for k, v in params.items()})
        return float(loss), {name: np.asarray(g) for name, g in grads.items()}

    def torch_loss_and_grads(self, params: Mapping[str, np.ndarray]) -> tuple[float, NumpyTree]:
        """Loss and gradients at ``params`` (numpy arrays), computed by torch autograd."""
        import torch

        leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        loss = self.torch_loss(leaves)
        loss.backward()
        return float(loss.detach()), {name: p.grad.numpy() for name, p in leaves.items()}


def _standard_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    return [
        0.1 * p["scalar"] * xp.sum(xp.tanh(p["matrix"] @ p["vector"])),
        0.05 * xp.sum(p["tensor"] * p["matrix"]),
    ]


def _matrices_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    return [
        0.05 * xp.sum(xp.tanh(p["tall"] @ p["wide"])),
        0.02 * xp.sum(p["square"]) * xp.sum(p["long"]),
    ]


def _hinge_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    return [
        0.1 * p["scalar"] * xp.sum(_relu(xp, p["matrix"] @ p["vector"] - 1.0)),
        0.05 * xp.sum(_relu(xp, p["tensor"] * p["matrix"] - 0.25)),
    ]


def _convex_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    return [0.5 * (xp.sum(p["matrix"]) - 2.0 * xp.sum(p["vector"]) + p["scalar"]) ** 2]


STANDARD = Problem(
    "standard",
    {"scalar": (), "vector": (4,), "matrix": (3, 4), "tensor": (2, 3, 4)},
    _wiggle,
    _standard_coupling,
)
MATRICES = Problem(
    "matrices",
    {"square": (4, 4), "tall": (6, 3), "wide": (3, 6), "long": (2, 8)},
    _wiggle,
    _matrices_coupling,
)
CONVEX = Problem(
    "convex",
    {"scalar": (), "vector": (4,), "matrix": (3, 4)},
    _quadratic_quartic,
    _convex_coupling,
)
HINGE = Problem("hinge", STANDARD.leaf_shapes, _hinge, _hinge_coupling)
PROBLEMS: dict[str, Problem] = {p.name: p for p in (STANDARD, MATRICES, CONVEX, HINGE)}

# The standard problem's functions, for the suites that use it directly.
LEAF_SHAPES = STANDARD.leaf_shapes
initial_params = STANDARD.initial_params
jax_loss = STANDARD.jax_loss
torch_loss = STANDARD.torch_loss
jax_value_and_grad = STANDARD.jax_value_and_grad
jax_loss_and_grads = STANDARD.jax_loss_and_grads
torch_loss_and_grads = STANDARD.torch_loss_and_grads
