"""Every schedule argument is checked when the schedule is built, with a message naming it."""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest

from optkit import schedules

ONE = schedules.exponential_lr(0.1, gamma=0.5)

# (factory, valid kwargs) to which each bad case below applies one override.
BASE = {
    "step_lr": (schedules.step_lr, {"learning_rate": 0.1, "step_size": 10}),
    "multistep_lr": (schedules.multistep_lr, {"learning_rate": 0.1, "milestones": [5, 10]}),
    "constant_lr": (schedules.constant_lr, {"learning_rate": 0.1}),
    "linear_lr": (schedules.linear_lr, {"learning_rate": 0.1}),
    "exponential_lr": (schedules.exponential_lr, {"learning_rate": 0.1, "gamma": 0.9}),
    "polynomial_lr": (schedules.polynomial_lr, {"learning_rate": 0.1}),
    "cosine_annealing_lr": (schedules.cosine_annealing_lr, {"learning_rate": 0.1, "T_max": 10}),
    "cosine_annealing_warm_restarts": (
        schedules.cosine_annealing_warm_restarts,
        {"learning_rate": 0.1, "T_0": 10},
    ),
    "cyclic_lr": (schedules.cyclic_lr, {"base_lr": 0.01, "max_lr": 0.1}),
    "one_cycle_lr": (schedules.one_cycle_lr, {"max_lr": 0.1, "total_steps": 100}),
    "cyclic_momentum": (schedules.cyclic_momentum, {}),
    "one_cycle_momentum": (schedules.one_cycle_momentum, {"total_steps": 100}),
    "lambda_lr": (schedules.lambda_lr, {"learning_rate": 0.1, "lr_lambda": lambda k: 1.0}),
    "warmup_cosine_decay": (
        schedules.warmup_cosine_decay,
        {"init_value": 0.0, "peak_value": 0.1, "warmup_steps": 5, "decay_steps": 50},
    ),
    "swa_lr": (schedules.swa_lr, {"learning_rate": 0.1, "swa_lr": 0.05}),
    "sequential_lr": (schedules.sequential_lr, {"schedules": [ONE, ONE], "milestones": [5]}),
    "join_schedules": (schedules.join_schedules, {"schedules": [ONE, ONE], "boundaries": [5]}),
}

NEGATIVE = r"must be in \[0.0, inf\]"
POSITIVE = r"must be in \(0.0, inf\]"
FINITE = "must be a finite number"
POSITIVE_INT = "must be a positive integer"

# (schedule, argument, bad value, error type, message pattern after the argument's name)
BAD = [
    *(
        (name, "learning_rate", bad, ValueError, NEGATIVE)
        for name in BASE
        if "learning_rate" in BASE[name][1]
        for bad in (-0.1, math.nan, jnp.asarray(-1.0))
    ),
    ("step_lr", "step_size", 0, ValueError, POSITIVE_INT),
    ("step_lr", "step_size", 2.5, ValueError, POSITIVE_INT),
    ("step_lr", "step_size", True, ValueError, POSITIVE_INT),
    ("step_lr", "gamma", 0.0, ValueError, POSITIVE),
    ("step_lr", "gamma", -0.5, ValueError, POSITIVE),
    ("multistep_lr", "milestones", [10, 5], ValueError, "must be sorted in non-decreasing order"),
    ("multistep_lr", "milestones", [-1, 5], ValueError, "must hold non-negative integers"),
    ("multistep_lr", "milestones", [1.5], ValueError, "must hold non-negative integers"),
    ("multistep_lr", "milestones", 5, TypeError, "must be a sequence of integers"),
    ("multistep_lr", "gamma", 0.0, ValueError, POSITIVE),
    ("constant_lr", "factor", 1.5, ValueError, r"must be in \[0.0, 1.0\]"),
    ("constant_lr", "factor", -0.1, ValueError, r"must be in \[0.0, 1.0\]"),
    ("constant_lr", "total_iters", 0, ValueError, POSITIVE_INT),
    ("linear_lr", "start_factor", 0.0, ValueError, r"must be in \(0.0, 1.0\]"),
    ("linear_lr", "start_factor", 1.5, ValueError, r"must be in \(0.0, 1.0\]"),
    ("linear_lr", "end_factor", 1.5, ValueError, r"must be in \[0.0, 1.0\]"),
    ("linear_lr", "total_iters", -3, ValueError, POSITIVE_INT),
    ("exponential_lr", "gamma", 0.0, ValueError, POSITIVE),
    ("exponential_lr", "gamma", math.nan, ValueError, POSITIVE),
    ("polynomial_lr", "total_iters", 0, ValueError, POSITIVE_INT),
    ("polynomial_lr", "power", -1.0, ValueError, NEGATIVE),
    ("cosine_annealing_lr", "T_max", 0, ValueError, POSITIVE_INT),
    ("cosine_annealing_lr", "T_max", 10.0, ValueError, POSITIVE_INT),
    ("cosine_annealing_lr", "eta_min", math.inf, ValueError, FINITE),
    ("cosine_annealing_warm_restarts", "T_0", 0, ValueError, POSITIVE_INT),
    ("cosine_annealing_warm_restarts", "T_mult", 0, ValueError, POSITIVE_INT),
    ("cosine_annealing_warm_restarts", "T_mult", 1.5, ValueError, POSITIVE_INT),
    ("cosine_annealing_warm_restarts", "eta_min", math.nan, ValueError, FINITE),
    ("cyclic_lr", "base_lr", -0.1, ValueError, NEGATIVE),
    ("cyclic_lr", "max_lr", -0.1, ValueError, NEGATIVE),
    ("cyclic_lr", "step_size_up", 0, ValueError, POSITIVE_INT),
    ("cyclic_lr", "step_size_down", 0, ValueError, POSITIVE_INT),
    ("cyclic_lr", "mode", "cosine", ValueError, "must be one of 'triangular', 'triangular2'"),
    ("cyclic_lr", "gamma", 0.0, ValueError, POSITIVE),
    ("one_cycle_lr", "max_lr", -1.0, ValueError, NEGATIVE),
    ("one_cycle_lr", "total_steps", 0, ValueError, POSITIVE_INT),
    ("one_cycle_lr", "pct_start", 1.5, ValueError, r"must be in \[0.0, 1.0\]"),
    ("one_cycle_lr", "pct_start", -0.1, ValueError, r"must be in \[0.0, 1.0\]"),
    ("one_cycle_lr", "pct_start", 0.01, ValueError, "must not equal 1"),
    ("one_cycle_lr", "anneal_strategy", "exp", ValueError, "must be one of 'cos', 'linear'"),
    ("one_cycle_lr", "div_factor", 0.0, ValueError, POSITIVE),
    ("one_cycle_lr", "final_div_factor", -1.0, ValueError, POSITIVE),
    ("one_cycle_lr", "three_phase", "yes", TypeError, "must be a bool"),
    *(
        (name, argument, bad, ValueError, r"must be in \[0.0, 1.0\]")
        for name in ("cyclic_momentum", "one_cycle_momentum")
        for argument in ("base_momentum", "max_momentum")
        for bad in (-0.1, 1.5, math.nan)
    ),
    ("cyclic_momentum", "step_size_up", 0, ValueError, POSITIVE_INT),
    ("cyclic_momentum", "step_size_down", 1.5, ValueError, POSITIVE_INT),
    ("cyclic_momentum", "mode", "cosine", ValueError, "must be one of 'triangular', 'triangular2'"),
    ("cyclic_momentum", "gamma", -1.0, ValueError, POSITIVE),
    ("one_cycle_momentum", "total_steps", 0, ValueError, POSITIVE_INT),
    ("one_cycle_momentum", "pct_start", 1.5, ValueError, r"must be in \[0.0, 1.0\]"),
    ("one_cycle_momentum", "pct_start", 0.01, ValueError, "must not equal 1"),
    ("one_cycle_momentum", "anneal_strategy", "exp", ValueError, "must be one of 'cos', 'linear'"),
    ("one_cycle_momentum", "three_phase", 1, TypeError, "must be a bool"),
    ("lambda_lr", "lr_lambda", 0.5, TypeError, "must be callable"),
    ("swa_lr", "swa_lr", -math.inf, ValueError, FINITE),
    ("swa_lr", "swa_lr", math.nan, ValueError, FINITE),
    ("swa_lr", "anneal_epochs", -1, ValueError, "must be a non-negative integer"),
    ("swa_lr", "anneal_epochs", 2.0, ValueError, "must be a non-negative integer"),
    ("swa_lr", "anneal_strategy", "exp", ValueError, "must be one of 'cos', 'linear'"),
    ("warmup_cosine_decay", "init_value", -1.0, ValueError, NEGATIVE),
    ("warmup_cosine_decay", "peak_value", -1.0, ValueError, NEGATIVE),
    ("warmup_cosine_decay", "end_value", math.inf, ValueError, FINITE),
    ("warmup_cosine_decay", "warmup_steps", -1, ValueError, "must be a non-negative integer"),
    ("warmup_cosine_decay", "decay_steps", 5, ValueError, "must be greater than warmup_steps"),
    ("warmup_cosine_decay", "decay_steps", 0, ValueError, POSITIVE_INT),
    ("sequential_lr", "milestones", [5, 6], ValueError, "must hold one entry fewer than"),
    ("sequential_lr", "milestones", [], ValueError, "must hold one entry fewer than"),
    ("sequential_lr", "schedules", [], ValueError, "must hold at least one schedule"),
    ("sequential_lr", "schedules", [ONE, 0.1], TypeError, r"\[1\] must be callable"),
    ("sequential_lr", "schedules", ONE, TypeError, "must be a sequence of schedules"),
    ("join_schedules", "boundaries", [-5], ValueError, "must hold non-negative integers"),
    ("join_schedules", "boundaries", [5, 6], ValueError, "must hold one entry fewer than"),
]


BASE["multiplicative_lr"] = (
    schedules.multiplicative_lr,
    {"learning_rate": 0.1, "lr_lambda": lambda epoch: 0.9, "total_steps": 10},
)
BAD += [
    ("multiplicative_lr", "learning_rate", -0.1, ValueError, NEGATIVE),
    ("multiplicative_lr", "lr_lambda", 0.9, TypeError, "must be callable"),
    ("multiplicative_lr", "lr_lambda", lambda epoch: math.nan, ValueError, r"\(1\) must return"),
    ("multiplicative_lr", "lr_lambda", lambda e: 1.0 if e < 5 else "x", ValueError, r"\(5\) must"),
    ("multiplicative_lr", "lr_lambda", lambda epoch: jnp.ones(2), ValueError, "finite real number"),
    ("multiplicative_lr", "total_steps", 0, ValueError, POSITIVE_INT),
    ("multiplicative_lr", "total_steps", 10.0, ValueError, POSITIVE_INT),
]


@pytest.mark.parametrize(
    ("schedule", "argument", "bad", "error", "message"),
    BAD,
    ids=[f"{name}-{argument}-{bad!r}" for name, argument, bad, _, _ in BAD],
)
def test_bad_argument_is_rejected_with_its_name(schedule, argument, bad, error, message):
    factory, kwargs = BASE[schedule]
    with pytest.raises(error, match=rf"^{argument}.*{message}"):
        factory(**{**kwargs, argument: bad})


def test_sorted_ties_are_allowed():
    assert schedules.multistep_lr(1.0, milestones=[3, 3], gamma=0.5)(3) == 0.25
    assert schedules.sequential_lr([ONE, ONE, ONE], milestones=[0, 0])(0) == 0.1


@pytest.mark.parametrize("name", sorted(BASE))
def test_valid_arguments_build_a_schedule(name):
    factory, kwargs = BASE[name]
    assert callable(factory(**kwargs))
