"""Complex parameters against torch.optim: the problems, the cases and both runners.

torch optimizes a complex param as its real and imaginary parts (``view_as_real``), in every
optimizer that takes complex params. The cases are the registry's parity cases
(``tests/parity/cases.py``: every variant of every row, and its param-groups split), on complex
versions of the parity problems: the same leaves, each complex, with a real loss of their real
and imaginary parts, written once for ``torch`` and ``jax.numpy``. Rows whose torch class refuses
complex params (:data:`TORCH_REFUSES`) have no case: optkit must refuse them too.

Gradients follow torch's convention (the one optkit and optax take): JAX's gradient of a real
loss in a complex param is the conjugate of torch's, so the optkit runner conjugates it (LBFGS
conjugates the gradients it evaluates itself).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from tests.parity import problem
from tests.parity.cases import Case, cases_for
from tests.parity.runner import PATHS
from tests.support.registry import REGISTRY

STEPS = 20
DTYPES: dict[str, type[np.complexfloating]] = {
    "complex64": np.complex64,
    "complex128": np.complex128,
}
SEED = 20250115

# torch.optim classes that raise on complex params, and the error each raises.
TORCH_REFUSES = {"Adafactor": "complex", "SparseAdam": "complex", "Muon": "complex"}

NumpyTree = dict[str, np.ndarray]


def _squared_modulus(xp: Any, x: Any) -> Any:
    return xp.real(x) ** 2 + xp.imag(x) ** 2


def _wiggle(xp: Any, p: Any, c: Any) -> Any:
    return xp.sum(_squared_modulus(xp, p - c) * (1.0 + problem.WIGGLE * xp.sin(2.0 * xp.real(p))))


def _quadratic_quartic(xp: Any, p: Any, c: Any) -> Any:
    return xp.sum(_squared_modulus(xp, p - c)) + 0.1 * xp.sum(_squared_modulus(xp, p) ** 2)


def _standard_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    product = p["matrix"] @ p["vector"]
    tensor, matrix = p["tensor"], p["matrix"]
    return [
        0.1 * xp.real(p["scalar"]) * xp.sum(xp.tanh(xp.real(product) - xp.imag(product))),
        0.05 * xp.sum(xp.real(tensor) * xp.real(matrix) + xp.imag(tensor) * xp.imag(matrix)),
    ]


def _convex_coupling(xp: Any, p: Mapping[str, Any]) -> list[Any]:
    linear = xp.sum(xp.real(p["matrix"])) - 2.0 * xp.sum(xp.imag(p["vector"]))
    return [0.5 * (linear + xp.real(p["scalar"])) ** 2]


class ComplexProblem:
    """A parity problem's leaves, made complex, with a real loss in torch and in jax."""

    def __init__(self, name: str, per_leaf: Callable, coupling: Callable) -> None:
        self.name = name
        self.leaf_shapes = problem.PROBLEMS[name].leaf_shapes
        self._per_leaf, self._coupling = per_leaf, coupling
        rng = np.random.default_rng(SEED)
        self._init, self._targets = {}, {}
        for leaf, shape in self.leaf_shapes.items():
            parts = rng.normal(size=(2, *shape))
            offsets = rng.uniform(0.5, 1.5, size=(2, *shape)) * rng.choice([-1.0, 1.0], (2, *shape))
            self._init[leaf] = parts[0] + 1j * parts[1]
            self._targets[leaf] = self._init[leaf] + offsets[0] + 1j * offsets[1]
        self.jax_value_and_grad = jax.jit(jax.value_and_grad(self.jax_loss))

    def initial_params(self, dtype: Any) -> NumpyTree:
        return {leaf: np.asarray(value, dtype) for leaf, value in self._init.items()}

    def _loss(self, xp: Any, params: Mapping[str, Any], constant: Callable) -> Any:
        total = 0.0
        for leaf, p in params.items():
            total = total + self._per_leaf(xp, p, constant(self._targets[leaf], p.dtype))
        for term in self._coupling(xp, params):
            total = total + term
        return total

    def jax_loss(self, params: Mapping[str, jax.Array]) -> jax.Array:
        return self._loss(jnp, params, lambda value, dtype: jnp.asarray(value, dtype))

    def torch_loss(self, params: Mapping[str, Any]) -> Any:
        import torch

        return self._loss(torch, params, lambda value, dtype: torch.as_tensor(value, dtype=dtype))

    def torch_grads(self, params: Mapping[str, Any]) -> NumpyTree:
        """torch's gradients at ``params`` (numpy), for the convention test."""
        import torch

        leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        self.torch_loss(leaves).backward()
        return {k: p.grad.numpy() for k, p in leaves.items()}


PROBLEMS = {
    "standard": ComplexProblem("standard", _wiggle, _standard_coupling),
    "convex": ComplexProblem("convex", _quadratic_quartic, _convex_coupling),
}

# Every parity case of the rows whose torch class takes complex params, except the tensor
# learning rate (a complex run has no real tensor of "the run's dtype" to give).
CASES: tuple[Case, ...] = tuple(
    case
    for info in REGISTRY
    if info.torch_class not in TORCH_REFUSES
    for case in cases_for(info)
    if not case.tensor_lr
)
CASES_BY_ID = {case.id: case for case in CASES}
REFUSING_ROWS = tuple(info for info in REGISTRY if info.torch_class in TORCH_REFUSES)


def torch_spec(case: Case) -> str:
    """The torch side of a complex case, stored in the golden file to detect stale ones."""
    return case.torch_spec() + f" complex seed={SEED} steps={STEPS}"


@functools.cache
def run_optkit(case_id: str, dtype_name: str, path: str) -> NumpyTree:
    """optkit's params before and after each of ``STEPS`` updates on ``path``, stacked per leaf.

    Cached: the golden and the live tests compare the same run.
    """
    case, dtype = CASES_BY_ID[case_id], DTYPES[dtype_name]
    task = PROBLEMS[case.problem]
    tx = case.make_optkit(dtype, PATHS[path])
    params = {k: jnp.asarray(v) for k, v in task.initial_params(dtype).items()}

    # The gradients come from one compiled function per dtype, shared by every case: each case
    # compiles only its own update.
    @jax.jit
    def step(params, loss, grads, state):
        extra = {"value": loss, "value_fn": task.jax_loss} if case.closure else {}
        updates, state = tx.update(grads, state, params, **extra)
        return optkit.apply_updates(params, updates), state

    state = tx.init(params)
    trajectory = [params]
    for _ in range(STEPS):
        loss, grads = task.jax_value_and_grad(params)
        params, state = step(params, loss, _conjugate(grads), state)
        trajectory.append(params)
    return {k: np.stack([np.asarray(p[k]) for p in trajectory]) for k in params}


@jax.jit
def _conjugate(grads: Any) -> Any:
    """JAX's gradients in torch's convention."""
    return jax.tree.map(jnp.conj, grads)


def run_torch(case: Case, dtype_name: str) -> NumpyTree:
    """torch.optim's params before and after each of ``STEPS`` steps, stacked per leaf."""
    import torch

    task = PROBLEMS[case.problem]
    params = {
        k: torch.tensor(v, requires_grad=True)
        for k, v in task.initial_params(DTYPES[dtype_name]).items()
    }
    if case.torch_groups is None:
        spec: Any = list(params.values())
    else:
        spec = [
            {"params": [params[k] for k in names], **overrides}
            for names, overrides in case.torch_groups
        ]
    optimizer = getattr(torch.optim, case.torch_optimizer)(spec, **case.torch_kwargs)

    def closure() -> Any:
        optimizer.zero_grad()
        loss = task.torch_loss(params)
        loss.backward()
        return loss

    trajectory = [{k: p.detach().numpy().copy() for k, p in params.items()}]
    for _ in range(STEPS):
        if case.closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        trajectory.append({k: p.detach().numpy().copy() for k, p in params.items()})
    return {k: np.stack([p[k] for p in trajectory]) for k in params}


def as_real(trajectory: NumpyTree) -> NumpyTree:
    """Each complex leaf as its real and imaginary parts on a last axis, for ``compare``."""
    return {k: np.stack([v.real, v.imag], axis=-1) for k, v in trajectory.items()}
