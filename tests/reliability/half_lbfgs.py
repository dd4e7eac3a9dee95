"""float16 and bfloat16 cases for L-BFGS: torch's ``LBFGS.step`` one iteration at a time.

``optkit.from_torch_state_dict`` does not convert torch's LBFGS state (a list history kept on
the first param), so these cases record it themselves. Each case runs torch's ``LBFGS`` with
``max_iter=1`` and no line search on a small quadratic (two params, concatenated in the order
given, which is also JAX's flatten order of their names) for :data:`STEPS` steps, and records the
params, the gradient the closure sets, the loss, and torch's state before and after every step.
:func:`to_optkit_state` maps a recorded state onto ``optkit.ScaleByLbfgsState``.

Regenerate the golden file (``golden/lbfgs16.npz``, not ``half_*.npz``: the row suite reads
those) from the repository root::

    python -m tests.reliability.half_lbfgs
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 8
SHAPES = {"a": (5,), "b": (3,)}  # 8 entries, concatenated as a, b
GOLDEN = Path(__file__).resolve().parent / "golden" / "lbfgs16.npz"


@dataclasses.dataclass(frozen=True)
class LbfgsCase:
    """One L-BFGS set-up (one iteration per step, no line search) in one 16-bit dtype."""

    name: str
    dtype: str
    lr: float
    history_size: int

    @property
    def id(self) -> str:
        return f"lbfgs-{self.name}-{self.dtype}"

    def kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "max_iter": 1, "history_size": self.history_size}

    def spec(self) -> str:
        return json.dumps({"kwargs": self.kwargs(), "steps": STEPS, "shapes": SHAPES})


CASES = [
    LbfgsCase(name, dtype, lr, history)
    for name, lr, history in (("plain", 1.0, 100), ("short_history", 0.5, 3))
    for dtype in ("float16", "bfloat16")
]


def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic ``0.5 x'Ax - b'x`` (A symmetric positive definite, eigenvalues 0.5 to 20)
    and the starting point, in float64."""
    rng = np.random.default_rng(16)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    a = q @ np.diag(np.geomspace(0.5, 20.0, 8)) @ q.T
    b = rng.standard_normal(8) * 4.0
    x0 = rng.standard_normal(8) * 3.0
    return a, b, x0


def split(flat: np.ndarray) -> dict[str, np.ndarray]:
    """A flat vector (torch's concatenation) as the params' leaves."""
    out, offset = {}, 0
    for name, shape in SHAPES.items():
        size = int(np.prod(shape))
        out[name] = flat[..., offset : offset + size].reshape(*flat.shape[:-1], *shape)
        offset += size
    return out


def run_torch(case: LbfgsCase) -> dict[str, np.ndarray]:
    """torch's run of ``case``: per step ``t``, ``x|t`` (the flat params before it; ``x|STEPS``
    after the last), ``g|t`` and ``loss|t`` (what the closure gave), and torch's state after
    it (``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``,
    ``prev_loss``, ``n_iter``, ``func_evals``), each as float32 (exact for 16-bit values)."""
    import torch

    dtype = getattr(torch, case.dtype)
    a, b, x0 = problem()
    params = [torch.tensor(v).to(dtype) for v in split(x0).values()]
    optimizer = torch.optim.LBFGS(params, **case.kwargs())
    record: dict[str, np.ndarray] = {}

    def flat() -> np.ndarray:
        return (
            torch.cat([p.detach().reshape(-1) for p in params]).float().numpy().astype(np.float64)
        )

    for step in range(STEPS):
        x = flat()
        gradient = a @ x - b  # in float64, rounded once to the params' dtype
        loss = float(0.5 * x @ a @ x - b @ x)
        record[f"x|{step}"] = x.astype(np.float32)
        record[f"g|{step}"] = torch.tensor(gradient).to(dtype).float().numpy()
        record[f"loss|{step}"] = np.array(loss, np.float64)

        def closure(gradient=gradient, loss=loss):
            for p, g in zip(params, split(gradient).values(), strict=True):
                p.grad = torch.tensor(g).to(dtype)
            return loss

        optimizer.step(closure)
        state = optimizer.state[params[0]]
        as32 = lambda v: np.asarray(v.float() if torch.is_tensor(v) else v, np.float32)
        for key in ("d", "t", "H_diag", "prev_flat_grad", "prev_loss", "n_iter", "func_evals"):
            record[f"{key}|{step}"] = as32(state[key])
        for key in ("old_dirs", "old_stps", "ro"):
            values = [as32(v) for v in state[key]]
            record[f"{key}|{step}"] = np.stack(values) if values else np.zeros((0,), np.float32)
    record[f"x|{STEPS}"] = flat().astype(np.float32)
    return record


def to_optkit_state(tx: Any, params: dict[str, Any], record: dict[str, np.ndarray], step: int):
    """torch's state after step ``step`` (``-1``: before the first) as optkit's state for
    ``params``: the history in order from slot 0, ``history_start = 0``."""
    import jax.numpy as jnp

    state = tx.init(params)
    if step < 0:
        return state
    dtype = next(iter(params.values())).dtype
    scalar = lambda key: jnp.asarray(record[f"{key}|{step}"], dtype)
    leaves = lambda key: {
        k: jnp.asarray(v, dtype) for k, v in split(record[f"{key}|{step}"]).items()
    }
    length = len(record[f"ro|{step}"])

    def history(key, buffers):
        if not length:
            return buffers
        stacked = split(record[f"{key}|{step}"])
        return {k: buffers[k].at[:length].set(jnp.asarray(stacked[k], dtype)) for k in buffers}

    count = jnp.asarray(step + 1, jnp.int32)
    return state._replace(
        count=count,
        func_evals=jnp.asarray(record[f"func_evals|{step}"], jnp.int32),
        n_iter=jnp.asarray(record[f"n_iter|{step}"], jnp.int32),
        direction=leaves("d"),
        step_size=scalar("t"),
        prev_grad=leaves("prev_flat_grad"),
        prev_loss=scalar("prev_loss"),
        grad_diffs=history("old_dirs", state.grad_diffs),
        param_diffs=history("old_stps", state.param_diffs),
        rho=state.rho.at[:length].set(jnp.asarray(record[f"ro|{step}"], dtype)),
        history_start=jnp.zeros([], jnp.int32),
        history_length=jnp.asarray(length, jnp.int32),
        hessian_diag=scalar("H_diag"),
    )


def main() -> None:
    import torch

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in CASES:
        arrays[f"{case.id}|spec"] = np.array(case.spec())
        arrays.update({f"{case.id}|{k}": v for k, v in run_torch(case).items()})
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {len(CASES)} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
