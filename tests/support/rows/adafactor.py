"""Registry row: Adafactor: torch's own torch.optim.Adafactor."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import WEIGHT_DECAY, OptimizerInfo, unit


@st.composite
def _adafactor(draw):
    hp = {
        "beta2_decay": draw(unit(-1.0, 0.0)),
        "d": draw(unit(1.0, 3.0)),
        "weight_decay": draw(WEIGHT_DECAY),
    }
    eps = (draw(st.one_of(st.none(), unit(1e-8, 1.0))), draw(unit(0.0, 0.1)))
    return hp, {"eps": eps, "maximize": draw(st.booleans())}


# Clipping (RMS of the normalized update above d >= 1) bites at d = 1 in the plain variant for
# the factored leaves only now and then, as gradients shrink; it bites at every step under
# maximize, where they grow. eps1 = 1 is above the root second moment of some entries, and
# eps2 = 0.5 above the scalar leaf's RMS (tests/optimizers/test_adafactor.py checks each bites).
ADAFACTOR = OptimizerInfo(
    name="adafactor",
    torch_class="Adafactor",
    docs_page="adafactor.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "beta2_decay": {"learning_rate": 0.05, "beta2_decay": -0.5},
        "eps1": {"learning_rate": 0.05, "eps": (1.0, 1e-3)},
        "eps2": {"learning_rate": 0.05, "eps": (None, 0.5)},
        "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.5},
        "maximize": {"learning_rate": 0.02, "maximize": True},
        "clipping_maximize": {"learning_rate": 0.02, "d": 1.05, "maximize": True},
        "combined": {
            "learning_rate": 0.05,
            "beta2_decay": -0.6,
            "eps": (0.1, 0.2),
            "d": 1.1,
            "weight_decay": 0.3,
            "maximize": True,
        },
    },
    typical={"learning_rate": 0.1, "eps": (None, 1e-2), "weight_decay": 1e-4},
    group_overrides={"learning_rate": 0.02, "beta2_decay": -0.5},
    bfloat16_learning_rate=0.3,
    hyperparameters=_adafactor,
    # beta2_decay = 0 makes the second moment the latest g^2, so clipping bites at d = 1 until d
    # is raised.
    runtime_changes=(
        {"beta2_decay": 0.0, "weight_decay": 0.1},
        {"d": 1.5, "learning_rate": 0.03},
    ),
    flatten=False,
    elementwise=False,
)


ROWS = (ADAFACTOR,)
