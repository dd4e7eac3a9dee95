"""Registry row: Rprop: torch.optim.Rprop."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import OptimizerInfo, unit, zero_or


@st.composite
def _rprop(draw):
    low = draw(zero_or(1e-6, 1e-3))
    hp = {
        "etas": (draw(unit(0.1, 0.9)), draw(unit(1.05, 2.0))),
        "step_sizes": (low, draw(unit(max(low, 1e-3), 50.0))),
    }
    return hp, {}


# Rprop follows the gradient's sign: near an optimum, a float32 gradient's sign is rounding
# noise and one flip changes a step size 2.4-fold, so no variant settles onto an optimum within
# 30 steps: the smallest |gradient| whose sign is taken is 8e-5 (plain, tensor_lr) to 0.6
# (combined), over 100 times the float32 rounding of the gradients (~5e-7).
RPROP = OptimizerInfo(
    name="rprop",
    torch_class="Rprop",
    docs_page="rprop.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "etas": {"learning_rate": 0.01, "etas": (0.3, 1.1)},
        # lr above the maximum: torch clamps it at the first update.
        "step_sizes": {"learning_rate": 0.1, "step_sizes": (5e-3, 0.05)},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "combined": {
            "learning_rate": 0.005,
            "etas": (0.4, 1.15),
            "step_sizes": (1e-4, 0.1),
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.01, "etas": (0.5, 1.2), "step_sizes": (1e-6, 1.0)},
    group_overrides={"learning_rate": 0.005, "etas": (0.3, 1.1)},
    bfloat16_learning_rate=0.01,
    hyperparameters=_rprop,
    runtime_changes=({"learning_rate": 0.05}, {"learning_rate": 0.001}),
    runtime_changes_matter=False,
    zero_learning_rate_overrides={"step_sizes": (0.0, 50.0)},
)


ROWS = (RPROP,)
