"""Registry row: Adagrad: torch.optim.Adagrad."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import WEIGHT_DECAY, OptimizerInfo, unit, zero_or


@st.composite
def _adagrad(draw):
    hp = {
        "lr_decay": draw(zero_or(1e-3, 0.5)),
        "weight_decay": draw(WEIGHT_DECAY),
        "initial_accumulator_value": draw(zero_or(1e-3, 1.0)),
        "eps": draw(unit(1e-10, 1e-3)),
    }
    return hp, {}


ADAGRAD = OptimizerInfo(
    name="adagrad",
    torch_class="Adagrad",
    docs_page="adagrad.md",
    variants={
        "plain": {"learning_rate": 0.1},
        "lr_decay": {"learning_rate": 0.1, "lr_decay": 0.05},
        "initial_accumulator": {"learning_rate": 0.1, "initial_accumulator_value": 0.5},
        "weight_decay": {"learning_rate": 0.1, "weight_decay": 0.1},
        "eps": {"learning_rate": 0.1, "eps": 1e-2},
        "maximize": {"learning_rate": 0.05, "maximize": True},
        "combined": {
            "learning_rate": 0.1,
            "lr_decay": 0.05,
            "initial_accumulator_value": 0.5,
            "weight_decay": 0.1,
            "eps": 1e-2,
            "maximize": True,
        },
    },
    typical={
        "learning_rate": 0.1,
        "lr_decay": 1e-2,
        "initial_accumulator_value": 0.1,
        "weight_decay": 1e-4,
    },
    group_overrides={"learning_rate": 0.05, "lr_decay": 0.01},
    bfloat16_learning_rate=0.3,
    hyperparameters=_adagrad,
    runtime_changes=(
        {"lr_decay": 0.2, "weight_decay": 0.1},
        {"learning_rate": 0.05, "eps": 1e-3},
    ),
)


ROWS = (ADAGRAD,)
