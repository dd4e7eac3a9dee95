"""Registry row: SparseAdam: torch.optim.SparseAdam."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import EPS, OptimizerInfo, zero_or


@st.composite
def _sparse_adam(draw):
    hp = {"b1": draw(zero_or(0.01, 0.99)), "b2": draw(zero_or(0.01, 0.999)), "eps": draw(EPS)}
    return hp, {}


# On the hinge problem, descent moves entries across their hinges, so the set of zero gradient
# entries changes from step to step (6-11 of tensor's, 0-6 of matrix's, 0 or 3 of vector's);
# ascent only drives entries further from them, so the maximize variants keep one set.
SPARSE_ADAM = OptimizerInfo(
    name="sparse_adam",
    torch_class="SparseAdam",
    docs_page="sparse_adam.md",
    variants={
        "plain": {"learning_rate": 0.05},
        "betas_eps": {"learning_rate": 0.05, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        "maximize": {"learning_rate": 0.01, "maximize": True},
        "combined": {"learning_rate": 0.01, "b1": 0.5, "b2": 0.9, "eps": 1e-3, "maximize": True},
    },
    typical={"learning_rate": 1e-2, "b2": 0.99},
    group_overrides={"learning_rate": 0.02, "b1": 0.8},
    bfloat16_learning_rate=0.1,
    hyperparameters=_sparse_adam,
    runtime_changes=({"b1": 0.8, "b2": 0.99}, {"eps": 1e-4, "learning_rate": 0.02}),
    problem="hinge",
    sparse_gradients=True,
)


ROWS = (SPARSE_ADAM,)
