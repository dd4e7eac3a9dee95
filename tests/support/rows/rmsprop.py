"""Registry row: RMSprop: torch.optim.RMSprop."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, unit, zero_or


@st.composite
def _rmsprop(draw):
    centered = draw(st.booleans())
    # Centered with alpha = 0 estimates the variance as g*g - g*g = 0, whose rounding (FMA under
    # jit) can be negative: sqrt gives NaN, as in torch. That degenerate case is left out.
    hp = {
        "alpha": draw(unit(0.1, 0.999) if centered else zero_or(0.1, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
        "momentum": draw(zero_or(0.05, 0.95)),
    }
    return hp, {"centered": centered}


RMSPROP = OptimizerInfo(
    name="rmsprop",
    torch_class="RMSprop",
    docs_page="rmsprop.md",
    variants={
        "plain": {"learning_rate": 0.01},
        "alpha_eps": {"learning_rate": 0.01, "alpha": 0.9, "eps": 1e-3},
        "centered": {"learning_rate": 0.01, "centered": True},
        "momentum": {"learning_rate": 0.01, "momentum": 0.5},
        "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.005, "maximize": True},
        "centered_momentum_wd": {
            "learning_rate": 0.01,
            "centered": True,
            "momentum": 0.5,
            "weight_decay": 0.1,
        },
    },
    typical={
        "learning_rate": 2e-3,
        "alpha": 0.9,
        "momentum": 0.9,
        "centered": True,
        "weight_decay": 1e-4,
    },
    group_overrides={"learning_rate": 0.005, "momentum": 0.3},
    bfloat16_learning_rate=0.02,
    hyperparameters=_rmsprop,
    runtime_changes=(
        {"alpha": 0.9, "momentum": 0.8},
        {"weight_decay": 0.1, "eps": 1e-3, "learning_rate": 0.005},
    ),
)


ROWS = (RMSPROP,)
