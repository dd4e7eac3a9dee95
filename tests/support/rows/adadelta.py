"""Registry row: Adadelta: torch.optim.Adadelta."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, WEIGHT_DECAY, OptimizerInfo, unit


@st.composite
def _adadelta(draw):
    hp = {
        "rho": draw(unit(0.0, 1.0)),
        "eps": draw(EPS),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    return hp, {}


# Adadelta's steps start at sqrt(eps / (1 - rho)) (about 0.003 at the defaults) and grow as the
# average of past steps does: the default learning rate of 1 moves the parity leaves only ~0.1
# in 30 steps, so most variants use 10 or a larger eps. rho = 1 (allowed, as in torch) freezes
# both averages at zero: the step is then the gradient itself, plain SGD.
ADADELTA = OptimizerInfo(
    name="adadelta",
    torch_class="Adadelta",
    docs_page="adadelta.md",
    variants={
        "plain": {"learning_rate": 10.0},
        "rho_eps": {"learning_rate": 1.0, "rho": 0.8, "eps": 1e-4},
        "rho_one": {"learning_rate": 0.05, "rho": 1.0},
        "weight_decay": {"learning_rate": 10.0, "weight_decay": 0.1},
        "maximize": {"learning_rate": 3.0, "maximize": True},
        "combined": {
            "learning_rate": 0.5,
            "rho": 0.8,
            "eps": 1e-4,
            "weight_decay": 0.1,
            "maximize": True,
        },
    },
    typical={"learning_rate": 1.0, "rho": 0.9, "eps": 1e-3, "weight_decay": 1e-4},
    group_overrides={"learning_rate": 3.0, "rho": 0.8},
    bfloat16_learning_rate=1.0,
    hyperparameters=_adadelta,
    runtime_changes=(
        {"rho": 0.8, "weight_decay": 0.1},
        {"eps": 1e-4, "learning_rate": 5.0},
    ),
)


ROWS = (ADADELTA,)
