"""torch's side of the clipping-norm cases: ``clip_grad_norm_`` on a tree, and a short training run.

16-bit values cross between NumPy and torch through float32 (exact for float16 and bfloat16), so
nothing is rounded on the way.
"""

from __future__ import annotations

import math

import numpy as np

from tests.loop.clip_cases import DTYPES, TrainCase, TreeCase, loss


def to_torch(torch, array: np.ndarray):
    if array.dtype.name == "bfloat16":  # NumPy's bfloat16 (ml_dtypes) is unknown to torch
        return torch.tensor(array.astype(np.float32)).to(torch.bfloat16)
    return torch.tensor(array)


def to_numpy(torch, tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy().astype(DTYPES["bfloat16"])
    return tensor.numpy()


def torch_clip(
    grads: list[np.ndarray], max_norm: float, norm_type: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``torch.nn.utils.clip_grad_norm_`` on params whose ``.grad`` are ``grads``: the total norm
    it returns and the clipped gradients, in the gradients' dtypes.

    torch refuses the inf norm of an empty tensor; optkit gives it norm 0, so for ``inf`` the
    empty leaves are left out of torch's call and come back unchanged (empty).
    """
    import torch

    tensors = []
    for grad in grads:
        value = to_torch(torch, grad)
        param = torch.zeros_like(value, requires_grad=True)
        param.grad = value.clone()
        tensors.append(param)
    clipped = [t for t in tensors if not (norm_type == math.inf and t.numel() == 0)]
    total = torch.nn.utils.clip_grad_norm_(clipped, max_norm, norm_type=norm_type)
    return to_numpy(torch, total), [to_numpy(torch, t.grad) for t in tensors]


def torch_tree(case: TreeCase) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Every clip of one tree case, in the order of ``case.runs()``."""
    grads = case.grads()
    return [torch_clip(grads, max_norm, p) for _, p, max_norm in case.runs()]


def torch_train(case: TrainCase) -> tuple[np.ndarray, np.ndarray]:
    """The params after each step (one row per step, leaves flattened and concatenated) and the
    total norm ``clip_grad_norm_`` returned at each step."""
    import torch

    start, targets = case.start()
    params = [torch.tensor(p, requires_grad=True) for p in start]
    targets = [torch.tensor(t) for t in targets]
    optimizer = getattr(torch.optim, case.optimizer)(params, **case.kwargs)
    trajectory, norms = [], []
    for _ in range(case.steps):
        optimizer.zero_grad()
        loss(params, targets, torch).backward()
        norm = torch.nn.utils.clip_grad_norm_(params, case.max_norm, norm_type=case.norm_type)
        optimizer.step()
        norms.append(float(norm))
        trajectory.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return np.stack(trajectory), np.asarray(norms)
