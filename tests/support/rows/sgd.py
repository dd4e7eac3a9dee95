"""Registry row: SGD: torch.optim.SGD."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import WEIGHT_DECAY, OptimizerInfo, unit, zero_or


@st.composite
def _sgd(draw):
    nesterov = draw(st.booleans())
    hp = {"momentum": draw(unit(0.05, 0.95) if nesterov else zero_or(0.05, 0.95))}
    if not nesterov:
        hp["dampening"] = draw(zero_or(0.01, 1.0))
    hp["weight_decay"] = draw(WEIGHT_DECAY)
    return hp, {"nesterov": nesterov}


SGD = OptimizerInfo(
    name="sgd",
    torch_class="SGD",
    docs_page="sgd.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "momentum": {"learning_rate": 0.02, "momentum": 0.9},
        "dampening": {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.3},
        "nesterov": {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        # torch forbids nesterov with dampening, so "everything on" takes two rows.
        "dampening_wd_maximize": {
            "learning_rate": 0.002,
            "momentum": 0.8,
            "dampening": 0.5,
            "weight_decay": 0.1,
            "maximize": True,
        },
        "nesterov_wd_maximize": {
            "learning_rate": 0.001,
            "momentum": 0.8,
            "nesterov": True,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "momentum": 0.5},
    bfloat16_learning_rate=0.05,
    hyperparameters=_sgd,
    runtime_changes=(
        {"momentum": 0.9, "weight_decay": 0.1},
        {"dampening": 0.3, "learning_rate": 0.01},
    ),
)


ROWS = (SGD,)
