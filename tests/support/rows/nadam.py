"""Registry row: NAdam: torch.optim.NAdam."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, zero_or


@st.composite
def _nadam(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
        "momentum_decay": draw(zero_or(1e-4, 0.5)),
    }
    return hp, {"decoupled_weight_decay": draw(st.booleans())}


# momentum_decay=0.1 makes the schedule mu_t visibly warm up within the 30 parity steps (at the
# default 4e-3 it barely moves: 0.96**(30 * 4e-3) = 0.995).
NADAM = OptimizerInfo(
    name="nadam",
    torch_class="NAdam",
    docs_page="nadam.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "betas_eps": {"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "momentum_decay": {"learning_rate": 0.01, "momentum_decay": 0.1},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "decoupled_weight_decay": {
            "learning_rate": 0.01,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined_coupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "momentum_decay": 0.1,
            "maximize": True,
        },
        "combined_decoupled": {
            "learning_rate": 0.01,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "momentum_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
    },
    typical={
        "learning_rate": 1e-2,
        "b2": 0.99,
        "weight_decay": 1e-2,
        "decoupled_weight_decay": True,
    },
    group_overrides={"learning_rate": 0.005, "momentum_decay": 0.1},
    bfloat16_learning_rate=0.1,
    hyperparameters=_nadam,
    scalar_state_dtypes={"mu_product": "float32"},
    runtime_changes=(
        {"b1": 0.8, "momentum_decay": 0.1, "weight_decay": 0.1},
        {"b2": 0.9, "eps": 1e-4, "learning_rate": 0.02},
    ),
)


ROWS = (NADAM,)
