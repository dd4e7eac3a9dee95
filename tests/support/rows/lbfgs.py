"""Registry row: LBFGS: torch.optim.LBFGS."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.optimizer_info import OptimizerInfo, zero_or


@st.composite
def _lbfgs(draw):
    hp = {
        "tolerance_grad": draw(zero_or(1e-6, 1e-2)),
        "tolerance_change": draw(zero_or(1e-9, 1e-4)),
    }
    # A few structures only: each compiles its own program.
    static = {
        "max_iter": draw(st.sampled_from([1, 4])),
        "history_size": draw(st.sampled_from([2, 10])),
        "line_search_fn": draw(st.sampled_from([None, "strong_wolfe"])),
    }
    return hp, static


# LBFGS runs the convex problem, to convergence within a few updates. In float32 the loss is
# flat to its last bit while the params are still ~1e-4 from the minimum, so where an
# iteration stops on a loss change below the default tolerance_change (1e-9: only an exact 0
# qualifies), or which step a line search picks there, is decided by rounding, in torch as here;
# a fixed step shorter than about half of the Newton step leaves gradient differences that lose
# digits to cancellation, and the history amplifies them. The variants therefore stop on
# tolerances above that noise (tolerance_grad 1e-2 stops an update, and every later one at
# once, a few 1e-3 from the minimum) and use learning rates of 0.5 or more for fixed steps;
# tests/optimizers/test_lbfgs.py compares torch's defaults and smaller learning rates in float64.
LBFGS = OptimizerInfo(
    name="lbfgs",
    torch_class="LBFGS",
    docs_page="lbfgs.md",
    variants={
        "learning_rate": {"learning_rate": 0.5, "tolerance_grad": 1e-2},
        "tolerance_grad": {"learning_rate": 1.0, "tolerance_grad": 1e-2},
        "tolerance_change": {"learning_rate": 1.0, "tolerance_change": 1e-4},
        # Two pairs kept, about ten made: the ring buffer wraps.
        "history_wraps": {
            "learning_rate": 0.7,
            "max_iter": 4,
            "history_size": 2,
            "tolerance_grad": 1e-2,
        },
        # The history and the last step carry over from update to update.
        "one_iteration": {
            "learning_rate": 1.0,
            "max_iter": 1,
            "history_size": 3,
            "tolerance_grad": 1e-2,
        },
        "max_eval": {
            "learning_rate": 0.8,
            "max_iter": 10,
            "max_eval": 4,
            "tolerance_grad": 1e-2,
        },
        "strong_wolfe": {
            "learning_rate": 1.0,
            "line_search_fn": "strong_wolfe",
            "tolerance_grad": 1e-2,
        },
        # A first step far too short: the search extrapolates, and runs out of evaluations.
        "strong_wolfe_extrapolates": {
            "learning_rate": 0.1,
            "line_search_fn": "strong_wolfe",
            "max_iter": 2,
            "tolerance_grad": 1e-2,
        },
        # A first step far too long: the search zooms into a bracket.
        "strong_wolfe_zooms": {
            "learning_rate": 4.0,
            "line_search_fn": "strong_wolfe",
            "max_iter": 3,
            "history_size": 2,
            "tolerance_change": 1e-4,
        },
        # max_eval cuts a search short.
        "strong_wolfe_max_eval": {
            "learning_rate": 3.0,
            "line_search_fn": "strong_wolfe",
            "max_iter": 10,
            "max_eval": 5,
            "tolerance_grad": 1e-2,
        },
    },
    typical={
        "learning_rate": 1.0,
        "max_iter": 2,
        "history_size": 10,
        "line_search_fn": "strong_wolfe",
    },
    group_overrides={},
    bfloat16_learning_rate=1.0,
    hyperparameters=_lbfgs,
    runtime_changes=(
        {"learning_rate": 0.3, "tolerance_change": 1e-6},
        {"tolerance_grad": 1e-3, "learning_rate": 0.8},
    ),
    problem="convex",
    closure=True,
    flatten=False,
    elementwise=False,
    param_groups=False,
)


ROWS = (LBFGS,)
