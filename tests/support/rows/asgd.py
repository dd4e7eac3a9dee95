"""Registry row: ASGD: torch.optim.ASGD."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import WEIGHT_DECAY, OptimizerInfo, unit, zero_or


@st.composite
def _asgd(draw):
    hp = {
        "lambd": draw(zero_or(1e-4, 1.0)),
        "alpha": draw(unit(0.0, 1.0)),
        "t0": draw(zero_or(1.0, 10.0)),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


# ASGD's averaged params (``t0``) never feed back into the params the parity suite compares;
# tests/optimizers/test_asgd.py compares them with torch's ``state[p]["ax"]``.
ASGD = OptimizerInfo(
    name="asgd",
    torch_class="ASGD",
    docs_page="asgd.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "lambd_alpha": {"learning_rate": 0.05, "lambd": 0.5, "alpha": 1.0},
        "t0": {"learning_rate": 0.05, "t0": 10.0},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "combined": {
            "learning_rate": 0.005,
            "lambd": 0.5,
            "alpha": 0.5,
            "t0": 5.0,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.3, "lambd": 1e-3, "t0": 5.0, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.02, "lambd": 0.1},
    bfloat16_learning_rate=0.1,
    hyperparameters=_asgd,
    runtime_changes=(
        {"lambd": 0.3, "alpha": 0.5, "t0": 3.0},
        {"learning_rate": 0.02, "weight_decay": 0.1},
    ),
    scalar_state_dtypes={"eta": "float32", "mu": "float32"},
)


ROWS = (ASGD,)
