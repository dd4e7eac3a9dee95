"""Registry row: RAdam: torch.optim.RAdam."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, zero_or


@st.composite
def _radam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {"decoupled_weight_decay": draw(st.booleans())}


# Every variant's b2 leaves the first 5 or 6 steps unrectified (SGD with momentum) and rectifies
# the rest, so both branches run in the 30 parity steps (tests/optimizers/test_radam.py checks).
RADAM = OptimizerInfo(
    name="radam",
    torch_class="RAdam",
    docs_page="radam.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "betas_eps": {"learning_rate": 0.02, "b1": 0.8, "b2": 0.9, "eps": 1e-4},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.1},
        "decoupled_weight_decay": {
            "learning_rate": 0.02,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined_coupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.8,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "maximize": True,
        },
        "combined_decoupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
    },
    typical={"learning_rate": 3e-2, "b2": 0.99, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "b2": 0.9},
    bfloat16_learning_rate=0.1,
    hyperparameters=_radam,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.9, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 0.02},
    ),
)


ROWS = (RADAM,)
