"""Registry rows: Adam and AdamW: torch.optim.Adam and torch.optim.AdamW."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, zero_or


@st.composite
def _adam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {"amsgrad": draw(st.booleans())}


# The amsgrad variants use b2=0.9 so the second moment actually shrinks and the running max
# differs from plain Adam.
ADAM = OptimizerInfo(
    name="adam",
    torch_class="Adam",
    docs_page="adam.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "betas_eps": {"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "amsgrad_wd_maximize": {
            "learning_rate": 0.01,
            "b2": 0.9,
            "amsgrad": True,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 1e-4, "amsgrad": True},
    group_overrides={"learning_rate": 0.005, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adam,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.99, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 0.02},
    ),
)


ADAMW = OptimizerInfo(
    name="adamw",
    torch_class="AdamW",
    docs_page="adam.md",
    variants={
        "default_wd": {"learning_rate": 0.01},
        "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "wd": {"learning_rate": 0.01, "weight_decay": 0.1},
        "combined": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "amsgrad": True,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 1e-2, "amsgrad": True},
    group_overrides={"learning_rate": 0.005, "weight_decay": 0.0},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adam,
    runtime_changes=(
        {"b2": 0.9, "weight_decay": 0.0},
        {"weight_decay": 0.3, "learning_rate": 0.02, "b1": 0.8, "eps": 1e-4},
    ),
)


ROWS = (ADAM, ADAMW)
