"""Registry row: Adamax: torch.optim.Adamax."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, zero_or


@st.composite
def _adamax(draw):
    hp = {
        "b1": draw(zero_or(0.01, 0.99)),
        "b2": draw(zero_or(0.01, 0.999)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


# Adamax's eps is added to |g| inside the maximum: "eps_in_max" makes it larger than most
# gradient entries late in the run, with a short-memory norm (b2 = 0.5), so adding it anywhere
# else would show; its b1 < 0.5 takes torch's other lerp formula.
ADAMAX = OptimizerInfo(
    name="adamax",
    torch_class="Adamax",
    docs_page="adamax.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "betas_eps": {"learning_rate": 0.02, "b1": 0.8, "b2": 0.9, "eps": 1e-3},
        "eps_in_max": {"learning_rate": 0.05, "b1": 0.3, "b2": 0.5, "eps": 0.5},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.1},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined": {
            "learning_rate": 0.02,
            "b1": 0.8,
            "b2": 0.9,
            "eps": 1e-3,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 2e-2, "b2": 0.99, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.01, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_adamax,
    runtime_changes=(
        {"b1": 0.8, "b2": 0.99, "weight_decay": 0.1},
        {"eps": 1e-2, "learning_rate": 0.01},
    ),
)


ROWS = (ADAMAX,)
