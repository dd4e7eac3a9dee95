"""What chained_scheduler and multiplicative_lr promise beyond torch's values (those are in the
case table, tests/schedules/cases.py): the errors that say why a chain cannot be reproduced,
the product rule, and multiplicative_lr's tabulation. Runs without torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optkit import schedules

LR = 0.1
COUNTS = jnp.arange(200)
FACTOR_SCHEDULES = {
    "step_lr": schedules.step_lr(LR, step_size=7, gamma=0.5),
    "multistep_lr": schedules.multistep_lr(LR, milestones=[0, 50, 50], gamma=0.3),
    "constant_lr": schedules.constant_lr(LR, factor=0.5, total_iters=20),
    "linear_lr": schedules.linear_lr(LR, start_factor=0.2, end_factor=0.05, total_iters=90),
    "exponential_lr": schedules.exponential_lr(LR, gamma=0.98),
    "polynomial_lr": schedules.polynomial_lr(LR, total_iters=120, power=1.5),
    "multiplicative_lr": schedules.multiplicative_lr(LR, lambda k: 0.99, total_steps=100),
}
# (a schedule that is not a product of factors in torch's chain, the words the error must hold)
REFUSED = {
    "cosine_annealing_lr": (schedules.cosine_annealing_lr(LR, T_max=10), "towards eta_min"),
    "cosine_annealing_warm_restarts": (
        schedules.cosine_annealing_warm_restarts(LR, T_0=10),
        "CosineAnnealingWarmRestarts",
    ),
    "one_cycle_lr": (schedules.one_cycle_lr(LR, total_steps=100), "OneCycleLR sets the lr"),
    "cyclic_lr": (schedules.cyclic_lr(0.01, LR), "CyclicLR sets the lr"),
    "sequential_lr": (
        schedules.sequential_lr([FACTOR_SCHEDULES["step_lr"]] * 2, milestones=[5]),
        "sequential_lr or join_schedules",
    ),
    "warmup_cosine_decay": (
        schedules.warmup_cosine_decay(0.0, LR, warmup_steps=5, decay_steps=50),
        "warmup_cosine_decay",
    ),
    "optax": (optax.exponential_decay(LR, 10, 0.5), "initial learning rate and factor are unknown"),
    "own_function": (lambda count: LR * 0.9**count, "Wrap a factor of your own in lambda_lr"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_schedule_that_is_not_a_factor_is_refused_with_the_reason(name):
    schedule, words = REFUSED[name]
    with pytest.raises(TypeError, match=r"^schedules\[1\] ") as error:
        schedules.chained_scheduler([FACTOR_SCHEDULES["exponential_lr"], schedule])
    assert words in str(error.value)
    assert "step_lr, multistep_lr" in str(error.value)  # and what can be chained


@pytest.mark.parametrize(
    ("schedules_argument", "error", "message"),
    [
        ([], ValueError, "must hold at least one schedule"),
        (FACTOR_SCHEDULES["step_lr"], TypeError, "must be a sequence of schedules"),
        ("step_lr", TypeError, "must be a sequence of schedules"),
        ([FACTOR_SCHEDULES["step_lr"], 0.1], TypeError, r"schedules\[1\] must be callable"),
        (
            [FACTOR_SCHEDULES["step_lr"], schedules.exponential_lr(0.2, gamma=0.9)],
            ValueError,
            r"schedules\[1\] \(ExponentialLR\) has learning_rate 0.2, but schedules\[0\] "
            r"\(StepLR\) has 0.1",
        ),
    ],
    ids=["empty", "one_schedule", "string", "not_callable", "mismatched_learning_rates"],
)
def test_bad_chains_are_rejected(schedules_argument, error, message):
    with pytest.raises(error, match=message):
        schedules.chained_scheduler(schedules_argument)


def test_a_traced_learning_rate_is_rejected():
    def chain_at(learning_rate):
        steps = [schedules.step_lr(learning_rate, 5), schedules.exponential_lr(learning_rate, 0.9)]
        return schedules.chained_scheduler(steps)(3)

    with pytest.raises(ValueError, match=r"schedules\[0\] has a traced learning_rate"):
        jax.jit(chain_at)(LR)


def test_factor_schedules_chain_into_the_product_of_their_factors():
    chained = jax.jit(schedules.chained_scheduler(list(FACTOR_SCHEDULES.values())))(COUNTS)
    product = LR * np.prod([s(COUNTS) / LR for s in FACTOR_SCHEDULES.values()], axis=0)
    np.testing.assert_allclose(chained, product, rtol=1e-13, atol=0)
    assert chained.dtype == jnp.float64


def test_lambda_sets_the_lr_and_later_schedules_scale_it_by_their_step_ratio():
    # torch's LambdaLR sets lr = base * lambda(k): the exponential before it is lost, the
    # step_lr after it multiplies by gamma only at its decay steps, not by gamma**(k // 10).
    chain = schedules.chained_scheduler(
        [
            schedules.exponential_lr(LR, gamma=0.5),
            schedules.lambda_lr(LR, lambda k: 1.0 / (1.0 + k)),
            schedules.step_lr(LR, step_size=10, gamma=0.5),
        ]
    )
    counts = np.arange(40)
    expected = LR / (1.0 + counts) * np.where((counts % 10 == 0) & (counts > 0), 0.5, 1.0)
    np.testing.assert_allclose(jax.jit(chain)(counts), expected, rtol=1e-14)


def test_a_decay_that_reached_zero_scales_by_one_after_a_lambda():
    # torch's PolynomialLR leaves the lr alone past total_iters, so the lambda's value returns.
    chain = schedules.chained_scheduler(
        [schedules.lambda_lr(LR, lambda k: 0.5 + 0 * k), schedules.polynomial_lr(LR, 4)]
    )
    np.testing.assert_allclose(
        chain(jnp.arange(7)), [0.05, 0.0375, 0.05 * 2 / 3, 0.025, 0, 0.05, 0.05]
    )


def test_multiplicative_lr_tabulates_lr_lambda_once_at_construction_and_then_holds():
    epochs = []

    def factor(epoch: int) -> float:
        epochs.append(epoch)
        return 0.9 if epoch % 2 else 1.2

    schedule = schedules.multiplicative_lr(LR, factor, total_steps=6)
    assert epochs == [1, 2, 3, 4, 5, 6]
    values = jax.jit(schedule)(jnp.asarray([0, 1, 2, 6, 7, 2**31 - 1], dtype=jnp.int32))
    assert epochs == [1, 2, 3, 4, 5, 6]
    expected_6 = LR * (0.9 * 1.2) ** 3
    np.testing.assert_allclose(
        values, [LR, LR * 0.9, LR * 0.9 * 1.2, *[expected_6] * 3], rtol=1e-15
    )


def test_multiplicative_lr_lambda_gets_python_ints():
    seen = set()
    schedules.multiplicative_lr(LR, lambda epoch: seen.add(type(epoch)) or 1.0, total_steps=3)
    assert seen == {int}


def test_factor_schedules_stay_plain_jittable_functions_of_the_count():
    for name, schedule in FACTOR_SCHEDULES.items():
        assert callable(schedule)
        jitted = jax.jit(jax.vmap(schedule))(COUNTS)
        np.testing.assert_allclose(jitted, schedule(COUNTS), rtol=1e-14, err_msg=name)
