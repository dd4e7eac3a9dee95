"""The ``--torch`` part of the memory benchmark: torch's AdamW stepped as the JAX step is.

No timing is asserted. Checked: a subject's step is ``g = p - x`` then the optimizer's step
(the params match two steps of ``torch.optim.AdamW`` run here by hand), its state bytes count
the moments and the step counters, and the markdown section reports each row's ratios.
torchao's subjects are left to the benchmark itself: their first step compiles C++ for a minute.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import memory, memory_report, memory_torch
from tests.support.torch_oracle import require_torch, require_torchao

torch = require_torch()

SHAPES = {"w": (64, 32), "b": (32,)}


def host_tree(seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}


@pytest.mark.parametrize("name", ["torch adamw", "torch adamw fused"])
def test_subject_steps_like_torch_adamw_on_the_gradient_p_minus_x(name):
    params, data = host_tree(0), host_tree(1)
    subject = memory_torch.TorchSubject(memory_torch.CONFIGS[name], params, data)
    subject.run(1)  # with the constructor's first step: two steps

    expected = [torch.tensor(params[key], requires_grad=True) for key in sorted(SHAPES)]
    optimizer = torch.optim.AdamW(
        expected, lr=memory.LEARNING_RATE, weight_decay=memory.WEIGHT_DECAY
    )
    for _ in range(2):
        for param, key in zip(expected, sorted(SHAPES), strict=True):
            param.grad = param.detach() - torch.from_numpy(data[key])
        optimizer.step()
    for got, want in zip(subject.params, expected, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-6, atol=1e-7)
        assert not torch.equal(got.detach(), torch.from_numpy(params[next(iter(SHAPES))]))

    num_params = sum(int(np.prod(shape)) for shape in SHAPES.values())
    # exp_avg and exp_avg_sq in float32, plus one float32 step counter per tensor.
    assert subject.record["state"]["bytes"] == 8 * num_params + 4 * len(SHAPES)
    record = subject.finish()
    assert record["library"] == "torch" and record["step"]["n"] == 0


def test_state_bytes_count_torchao_codes_scales_and_map_once():
    require_torchao()
    from torchao.optim.subclass_4bit import OptimState4bit
    from torchao.optim.subclass_8bit import OptimState8bit

    step = torch.zeros(())
    eight = OptimState8bit.zeros((64, 128), signed=True, block_size=256)
    four = OptimState4bit.zeros((64, 128), signed=False, block_size=128)
    holder = SimpleNamespace(state={"a": {"exp_avg": eight, "step": step, "again": step}})
    # 8192 one-byte codes, 32 float32 scales, the 256-entry float32 map; the step once.
    assert memory_torch.state_bytes(holder) == 8192 + 32 * 4 + 256 * 4 + 4
    holder = SimpleNamespace(state={"a": {"exp_avg_sq": four}})
    # Two codes per byte, 64 scales, a 16-entry map.
    assert memory_torch.state_bytes(holder) == 4096 + 64 * 4 + 16 * 4


def test_markdown_section_reports_ratios_to_both_references():
    def record(median, ratio_torch, ratio_optkit, bytes_per_param):
        return {
            "step": {"median": median, "iqr": 0.0},
            "step_ratio_to_torch_reference": ratio_torch,
            "step_ratio_to_reference": ratio_optkit,
            "state": {"bytes_per_param": bytes_per_param},
        }

    results = {
        "optimizers": {
            "optkit adamw 8-bit": {"step_ratio_to_reference": 4.0, "step": {"median": 0.4}},
        },
        "torch": {
            "reference": memory_torch.REFERENCE,
            "versions": {"torch": "x", "torchao": "y"},
            "threads": 2,
            "optimizers": {
                memory_torch.REFERENCE: record(0.1, 1.0, 1.0, 8.0),
                "torchao adamw 8-bit": record(2.0, 20.0, 20.0, 2.04),
            },
        },
    }
    text = "\n".join(memory_report.torch_section(results))
    assert "| torchao adamw 8-bit | 2.0400 | 2000.0 [0.0] | 20.00 | 20.00 |" in text
    assert "optkit 4.00x (over `optkit.adamw`), torchao 20.00x" in text
    assert "torchao's 8-bit step takes 5.0x optkit's" in text
    assert "4-bit over" not in text  # no 4-bit rows, no 4-bit comparison
