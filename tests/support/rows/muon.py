"""Registry row: Muon: torch.optim.Muon."""

from __future__ import annotations

from collections.abc import Callable

import jax
from hypothesis import strategies as st

import optkit
from tests.support.optimizer_info import WEIGHT_DECAY, Kwargs, OptimizerInfo, unit, zero_or


@st.composite
def _muon(draw):
    nesterov = draw(st.booleans())
    hp = {
        "momentum": draw(zero_or(0.05, 0.99)),
        "weight_decay": draw(WEIGHT_DECAY),
        "eps": draw(unit(1e-8, 1e-3)),
    }
    return hp, {"nesterov": nesterov}


def _muon_on_matrices(
    factory: Callable[..., optkit.GradientTransformation], kwargs: Kwargs
) -> optkit.GradientTransformation:
    """Muon on the 2-D leaves and AdamW (torch's defaults, Muon's learning rate) on the others,
    the set-up torch's documentation recommends."""
    labels = lambda params: jax.tree.map(lambda p: "matrix" if p.ndim == 2 else "other", params)
    other = optkit.adamw(learning_rate=kwargs.get("learning_rate", 1e-3))
    return optkit.partition({"matrix": factory(**kwargs), "other": other}, labels)


# Muon's update has the same size whatever the gradient's (an orthogonalized matrix), so the
# learning rates below set how far each leaf travels: 30 steps of 0.02 move every leaf of the
# matrices problem by 0.2 or more. float64 runs reproduce torch's bfloat16 iteration bit for bit.
# In float32, jax's and torch's gradients differ in the last bit for about a third of the
# entries; once such a difference straddles a bfloat16 rounding boundary of the Newton-Schulz
# input (about once in 2**16 entries), the two paths differ by ~1e-4 from then on. The variants
# and group overrides below stay clear of that within 30 steps (momentum=0.3 and group overrides
# lr=0.01, momentum=0.8 did not, at steps 27 and 21).
MUON = OptimizerInfo(
    name="muon",
    torch_class="Muon",
    docs_page="muon.md",
    variants={
        "plain": {"learning_rate": 0.02},
        "no_nesterov": {"learning_rate": 0.02, "nesterov": False},
        "no_weight_decay": {"learning_rate": 0.02, "weight_decay": 0.0},
        "weight_decay": {"learning_rate": 0.02, "weight_decay": 0.5},
        # 0.4: the buffer's lerp weight 1 - momentum is >= 0.5, torch's other lerp formula.
        "momentum": {"learning_rate": 0.02, "momentum": 0.4},
        "original": {"learning_rate": 0.02, "adjust_lr_fn": "original"},
        "match_rms_adamw": {"learning_rate": 0.02, "adjust_lr_fn": "match_rms_adamw"},
        "ns": {
            "learning_rate": 0.02,
            "ns_coefficients": (2.0, -1.5, 0.5),
            "ns_steps": 3,
            "eps": 1e-3,
        },
        "combined": {
            "learning_rate": 0.02,
            "weight_decay": 0.3,
            "momentum": 0.8,
            "nesterov": False,
            "ns_coefficients": (3.0, -3.2, 1.2),
            "ns_steps": 7,
            "eps": 1e-5,
            "adjust_lr_fn": "match_rms_adamw",
        },
    },
    typical={"learning_rate": 0.02, "weight_decay": 1e-2},
    group_overrides={"learning_rate": 0.03, "momentum": 0.9},
    bfloat16_learning_rate=0.05,
    hyperparameters=_muon,
    runtime_changes=(
        {"momentum": 0.8, "weight_decay": 0.3},
        {"learning_rate": 0.01, "eps": 1e-3},
    ),
    problem="matrices",
    flatten=False,
    build=_muon_on_matrices,
    matrix_functions=("newton_schulz",),
)


ROWS = (MUON,)
