"""Runs shared by the checkpoint-interop tests: torch runs of a registry row, optkit's jitted step.

Every registry row whose torch class keeps a state per parameter (all but LBFGS) runs its
``typical`` set-up (every state buffer on) on its parity problem in float64. torch runs
``STEPS`` steps, its ``state_dict()`` is taken, and it runs ``STEPS`` more: the trajectory a run
resumed from that dict must follow. Each row's torch run and its optkit step are built once per
session (``functools.cache``) and shared by the tests that need them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from tests.interop.generate_golden import STEPS
from tests.parity import problem
from tests.parity.runner import compare
from tests.support.optimizer_info import OptimizerInfo, to_torch_kwargs
from tests.support.registry import BY_NAME, REGISTRY

RTOL, ATOL = 1e-10, 1e-12  # the float64 parity tolerances (tests/optimizers/test_parity.py)

# torch's LBFGS keeps one flat record for all its parameters: from_torch_state_dict refuses it.
ROWS: tuple[OptimizerInfo, ...] = tuple(info for info in REGISTRY if info.torch_class != "LBFGS")
NAMES = [info.name for info in ROWS]

NumpyTree = dict[str, np.ndarray]


def paths(info: OptimizerInfo) -> list[str]:
    """optkit's leaf paths in torch's parameter order (the problem's leaves, in their order)."""
    return list(problem.PROBLEMS[info.problem].leaf_shapes)


def torch_params(values: Mapping[str, Any], order: list[str]) -> dict[str, Any]:
    import torch

    return {name: torch.tensor(np.asarray(values[name]), requires_grad=True) for name in order}


def torch_optimizer(info: OptimizerInfo, params: Mapping[str, Any]) -> Any:
    """The row's typical set-up in torch, over ``params`` in their order (one param group)."""
    import torch

    return getattr(torch.optim, info.torch_class)(
        list(params.values()), **to_torch_kwargs(info.typical)
    )


def torch_steps(
    optimizer: Any,
    params: Mapping[str, Any],
    task: problem.Problem = problem.STANDARD,
    steps: int = STEPS,
    *,
    sparse: bool = False,
) -> list[NumpyTree]:
    """The params after each of ``steps`` torch steps on ``task`` (``sparse``: with the
    sparse-layout gradients SparseAdam needs)."""
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        task.torch_loss(params).backward()
        if sparse:
            for p in params.values():
                p.grad = p.grad.to_sparse()
        optimizer.step()
        trajectory.append({name: p.detach().numpy().copy() for name, p in params.items()})
    return trajectory


def row_steps(
    info: OptimizerInfo, optimizer: Any, params: Mapping[str, Any], steps: int = STEPS
) -> list[NumpyTree]:
    """:func:`torch_steps` on the row's problem, with its kind of gradients."""
    task = problem.PROBLEMS[info.problem]
    return torch_steps(optimizer, params, task, steps, sparse=info.sparse_gradients)


@dataclasses.dataclass(frozen=True)
class TorchReference:
    """A torch run: params and a copy of its ``state_dict()`` after ``STEPS`` steps, and the
    params after each of ``STEPS`` more."""

    params: NumpyTree
    state_dict: dict[str, Any]
    continued: list[NumpyTree]


@functools.cache
def torch_reference(name: str) -> TorchReference:
    info = BY_NAME[name]
    params = torch_params(problem.PROBLEMS[info.problem].initial_params(np.float64), paths(info))
    optimizer = torch_optimizer(info, params)
    *_, at_checkpoint = row_steps(info, optimizer, params)
    saved = copy.deepcopy(optimizer.state_dict())  # its tensors change in place as torch goes on
    return TorchReference(at_checkpoint, saved, row_steps(info, optimizer, params))


Step = Callable[[dict[str, jax.Array], optkit.OptState], tuple[dict[str, jax.Array], Any]]


def make_step(tx: optkit.GradientTransformation, loss: Callable[[Any], jax.Array]) -> Step:
    """One jitted ``(params, state) -> (params, state)`` update on ``loss``."""

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    return step


@functools.cache
def optkit_run(name: str) -> tuple[optkit.GradientTransformation, Step]:
    """The row's typical set-up in optkit, and its jitted step (compiled once per session)."""
    info = BY_NAME[name]
    tx = info.factory(**info.typical)  # one optimizer on the whole tree, as torch's
    return tx, make_step(tx, problem.PROBLEMS[info.problem].jax_loss)


def as_jax(values: Mapping[str, Any]) -> dict[str, jax.Array]:
    return {name: jnp.asarray(value) for name, value in values.items()}


def continue_optkit(
    step: Step, params: dict[str, jax.Array], state: Any, steps: int = STEPS
) -> tuple[list[NumpyTree], dict[str, jax.Array], Any]:
    """The params after each of ``steps`` optkit updates, and the final params and state."""
    trajectory = []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append({name: np.asarray(value) for name, value in params.items()})
    return trajectory, params, state


def assert_same_path(actual: list[NumpyTree], expected: list[NumpyTree]) -> float:
    """Fail unless the trajectories agree to the float64 parity tolerance; return the largest
    relative error."""
    mismatch = compare(actual, expected, rtol=RTOL, atol=ATOL)
    assert mismatch is None, str(mismatch)
    return max(
        float(np.max(np.abs(a[k] - e[k]) / np.maximum(np.abs(e[k]), ATOL)))
        for a, e in zip(actual, expected, strict=True)
        for k in e
    )
