"""Run one parity case for a fixed number of steps in torch and in optkit, and compare the paths.

Both runners return the whole trajectory (the initial params, then the params after each step) so
a mismatch can be located at the first step where it appears, not just at the end.

optkit runs each case on every path of ``PATHS``: the per-leaf transform as the table builds it,
and the same transform wrapped in ``optkit.flatten`` (one flat vector per dtype). torch's side,
and so the golden files, do not depend on the path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from tests.parity import problem
from tests.parity.cases import Case

STEPS = 30
DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}

Trajectory = list[dict[str, np.ndarray]]
JaxParams = dict[str, jax.Array]

# How optkit runs a case's transform: every path must reproduce the same torch trajectory.
PATHS: dict[str, Callable[[optkit.GradientTransformation], optkit.GradientTransformation]] = {
    "per-leaf": lambda tx: tx,
    "flatten": optkit.flatten,
}


def run_id(case_id: str, path: str) -> str:
    """A test id for a case on a path: the case id alone for per-leaf, ``<case>-<path>`` else."""
    return case_id if path == "per-leaf" else f"{case_id}-{path}"


def make_optkit_step(
    case: Case, dtype: type[np.floating], path: str = "per-leaf"
) -> tuple[JaxParams, optkit.GradientTransformation, Callable]:
    """Initial jax params, the case's transform on ``path``, and its jitted
    ``(params, loss, grads, state)`` step.

    The step is jitted once per case, dtype and path; the loop in ``run_optkit`` reuses the program.
    Gradients come from the problem's ``jax_value_and_grad``, compiled once for all cases, so each
    case compiles only its own update + apply (XLA compile time dominates the suite's run time).
    A ``closure`` case's update also gets the loss, the gradients and the loss function, as
    ``value=``, ``grad=`` and ``value_fn=`` (optax's extra-argument convention).
    """
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 parity needs jax_enable_x64 (tests/conftest.py turns it on)")
    task = problem.PROBLEMS[case.problem]
    params = {name: jnp.asarray(value) for name, value in task.initial_params(dtype).items()}
    tx = case.make_optkit(dtype, PATHS[path])

    @jax.jit
    def step(
        params: JaxParams, loss: jax.Array, grads: JaxParams, state: optkit.OptState
    ) -> tuple[JaxParams, optkit.OptState]:
        extra = {"value": loss, "grad": grads, "value_fn": task.jax_loss} if case.closure else {}
        updates, state = tx.update(grads, state, params, **extra)
        return optkit.apply_updates(params, updates), state

    return params, tx, step


def run_optkit(
    case: Case, dtype: type[np.floating], steps: int = STEPS, path: str = "per-leaf"
) -> Trajectory:
    """The params before and after each of ``steps`` optkit updates on ``path``, as numpy arrays."""
    params, tx, step = make_optkit_step(case, dtype, path)
    value_and_grad = problem.PROBLEMS[case.problem].jax_value_and_grad
    state = tx.init(params)
    trajectory = [_numpy_tree(params)]
    for _ in range(steps):
        loss, grads = value_and_grad(params)
        params, state = step(params, loss, grads, state)
        trajectory.append(_numpy_tree(params))
    return trajectory


def run_torch(case: Case, dtype: type[np.floating], steps: int = STEPS) -> Trajectory:
    """The params before and after each of ``steps`` torch.optim steps, as numpy arrays."""
    import torch  # Imported here so the golden-file tests run without torch.

    task = problem.PROBLEMS[case.problem]
    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in task.initial_params(dtype).items()
    }
    kwargs = dict(case.torch_kwargs)
    if case.tensor_lr:
        kwargs["lr"] = torch.tensor(kwargs["lr"], dtype=params[next(iter(params))].dtype)
    if case.torch_groups is None:
        spec: Any = list(params.values())
    else:
        spec = [
            {"params": [params[name] for name in names], **overrides}
            for names, overrides in case.torch_groups
        ]
    optimizer = getattr(torch.optim, case.torch_optimizer)(spec, **kwargs)

    def closure() -> Any:
        optimizer.zero_grad()
        loss = task.torch_loss(params)
        loss.backward()
        if case.torch_clip is not None:
            clip_name, threshold = case.torch_clip
            getattr(torch.nn.utils, clip_name)(params.values(), threshold)
        if case.sparse_grads:
            for p in params.values():
                p.grad = p.grad.to_sparse()
        return loss

    trajectory = [_numpy_tree(params)]
    for _ in range(steps):
        if case.closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        trajectory.append(_numpy_tree(params))
    return trajectory


def _numpy_tree(params: dict) -> dict[str, np.ndarray]:
    """A numpy copy of a dict of jax arrays or (detached) torch tensors."""
    return {
        name: (p.detach().numpy() if hasattr(p, "detach") else np.asarray(p)).copy()
        for name, p in params.items()
    }


def stack(trajectory: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per leaf, the trajectory as one array with the step as its leading axis."""
    return {name: np.stack([params[name] for params in trajectory]) for name in trajectory[0]}


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """Where two trajectories first disagree beyond tolerance, and by how much overall."""

    first_step: int
    leaf: str
    max_relative_error: float
    worst_step: int

    def __str__(self) -> str:
        return (
            f"first out of tolerance at step {self.first_step} (leaf {self.leaf!r}); "
            f"max relative error {self.max_relative_error:.3g} at step {self.worst_step}"
        )


def compare(
    actual: Sequence[dict[str, np.ndarray]] | dict[str, np.ndarray],
    expected: Sequence[dict[str, np.ndarray]] | dict[str, np.ndarray],
    *,
    rtol: float,
    atol: float,
) -> Mismatch | None:
    """None if every step of ``actual`` is within ``atol + rtol * |expected|``, else a Mismatch.

    Accepts trajectories as lists of param dicts or as stacked per-leaf arrays.
    """
    actual = actual if isinstance(actual, dict) else stack(actual)
    expected = expected if isinstance(expected, dict) else stack(expected)
    if actual.keys() != expected.keys():
        raise ValueError(f"leaves differ: {sorted(actual)} vs {sorted(expected)}")
    first: tuple[int, str] | None = None
    worst_error, worst_step = 0.0, 0
    for name in sorted(expected):
        a, e = actual[name].astype(np.float64), expected[name].astype(np.float64)
        if a.shape != e.shape:
            raise ValueError(f"leaf {name!r}: shape {a.shape} vs {e.shape}")
        error = np.abs(a - e).reshape(len(e), -1)
        scale = np.abs(e).reshape(len(e), -1)
        bad_steps = np.flatnonzero(np.any(~(error <= atol + rtol * scale), axis=1))
        if bad_steps.size and (first is None or bad_steps[0] < first[0]):
            first = (int(bad_steps[0]), name)
        relative = np.max(error / np.maximum(scale, atol), axis=1)
        if np.max(relative) > worst_error:
            worst_error, worst_step = float(np.max(relative)), int(np.argmax(relative))
    if first is None:
        return None
    return Mismatch(first[0], first[1], worst_error, worst_step)
