"""torch's and torchao's AdamW on the memory benchmark's tree: the same step, timed beside optkit's.

``python -m benchmarks.memory --torch`` adds these to the alternating rounds of
:mod:`benchmarks.memory`, so every ratio between them comes from one process on one machine.
The step is the JAX step's (:func:`benchmarks.measure.make_train_step`): the gradient of
``0.5 * sum((p - x)**2)``, ``g = p - x``, then the optimizer's step, which updates the params in
place (torch's convention; JAX's donated buffers are the same memory reused).

- ``torch adamw``: ``torch.optim.AdamW`` with its defaults (on CPU, the per-tensor loop).
- ``torch adamw fused``: ``torch.optim.AdamW(fused=True)``: one C++ kernel per tensor.
- ``torchao adamw 8-bit`` / ``4-bit``: ``torchao.optim.AdamW8bit`` / ``AdamW4bit``, the
  implementations ``optkit.quantize_state`` reproduces; each parameter's step is a function that
  ``torch.compile`` compiles (once per shape, C++ on CPU), so their first steps are slow.

torchao quantizes tensors of at least 4096 elements, as ``quantize_state``'s ``min_size``
does by default.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.memory import LEARNING_RATE, WEIGHT_DECAY, Timed

REFERENCE = "torch adamw fused"


@dataclasses.dataclass(frozen=True)
class TorchConfig:
    """One torch optimizer: ``build(params)`` returns it; ``bits`` is its state's width."""

    name: str
    build: Callable[[list[Any]], Any]
    description: str
    bits: int = 32


def _torch_adamw(params: list[Any], **options: Any) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, **options)


def _torchao_adamw(params: list[Any], bits: int) -> Any:
    from torchao import optim

    cls = optim.AdamW8bit if bits == 8 else optim.AdamW4bit
    return cls(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)


CONFIGS: dict[str, TorchConfig] = {
    config.name: config
    for config in (
        TorchConfig(
            "torch adamw",
            _torch_adamw,
            "torch.optim.AdamW(lr=1e-3, weight_decay=1e-2): its CPU default, a loop over tensors",
        ),
        TorchConfig(
            REFERENCE,
            lambda params: _torch_adamw(params, fused=True),
            "torch.optim.AdamW(..., fused=True): one fused C++ kernel per tensor",
        ),
        TorchConfig(
            "torchao adamw 8-bit",
            lambda params: _torchao_adamw(params, 8),
            "torchao.optim.AdamW8bit(...): blocks of 256, tensors of >= 4096 elements",
            bits=8,
        ),
        TorchConfig(
            "torchao adamw 4-bit",
            lambda params: _torchao_adamw(params, 4),
            "torchao.optim.AdamW4bit(...): blocks of 128, tensors of >= 4096 elements",
            bits=4,
        ),
    )
}


def state_bytes(optimizer: Any) -> int:
    """The bytes of the optimizer's state: every tensor's storage, counted once (torchao's
    quantized tensors hold codes, scales and their own copy of the quantization map)."""
    import torch

    storages: dict[int, int] = {}

    def visit(value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            return
        if type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
            names, _ = value.__tensor_flatten__()
            for name in names:
                visit(getattr(value, name))
            return
        storage = value.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()

    for state in optimizer.state.values():
        for value in state.values():
            visit(value)
    return sum(storages.values())


class TorchSubject(Timed):
    """One torch optimizer's step on the tree, timed as ``memory.Subject`` is."""

    def __init__(self, config: TorchConfig, host_params: Any, host_data: Any) -> None:
        import torch

        self.config = config
        self.params = [torch.from_numpy(np.array(leaf)) for leaf in jax.tree.leaves(host_params)]
        self.data = [torch.from_numpy(np.asarray(leaf)) for leaf in jax.tree.leaves(host_data)]
        for param in self.params:
            param.requires_grad_(True)
        self.optimizer = config.build(self.params)
        num_params = sum(param.numel() for param in self.params)
        start = time.perf_counter()
        self._step()  # the first step allocates the state (and compiles torchao's steps)
        first_step_s = time.perf_counter() - start
        total = state_bytes(self.optimizer)
        self.record = {
            "library": "torchao" if config.bits < 32 else "torch",
            "description": config.description,
            "first_step_s": first_step_s,
            "state": {"bytes": total, "bytes_per_param": total / num_params},
            "samples_s": [],
        }

    def _step(self) -> None:
        import torch

        with torch.no_grad():
            grads = torch._foreach_sub(self.params, self.data)
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        self.optimizer.step()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self._step()
        return (time.perf_counter() - start) / steps

    def release(self) -> None:
        self.params = self.data = []
        self.optimizer = None
