"""Reliability rows: hyperparameters given under torch's names, set out of range at run time,
and schedules that return something other than a real scalar or fail when traced.

- Every optimizer given torch's spelling (``lr=``, ``betas=``) or a typo raises a TypeError that
  names the optkit argument (one wrapper, ``optkit/_arguments.py``; every registry row).
- ``set_hyperparams`` range-checks every value it sets with ``_validation.RANGES`` (every
  bounded numeric argument of every registry row, and the primitives' ``max_norm``,
  ``eps_root``).
- A schedule returning a bool, a complex number, a vector or NaN is refused when the optimizer
  is built (evaluated on the count 0), naming the argument; one that raises when traced gets an
  error naming its argument, chained to the original.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import pytest

import optkit
from optkit import _validation
from tests.reliability.table import Refused, check_refused, params_of
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import REGISTRY

PARAMS = {"w": jnp.ones((3, 2))}

# --- torch's spellings and typos ------------------------------------------------------------------


def torch_spelling_rows(info: OptimizerInfo) -> list[Refused]:
    factory = info.factory
    rows = [
        Refused(
            f"{info.name}-lr", lambda: factory(lr=1e-3), TypeError, ("'lr'", "'learning_rate'")
        ),
        Refused(
            f"{info.name}-learning_rat-typo",
            lambda: factory(learning_rat=1e-3),
            TypeError,
            ("'learning_rat'", "did you mean 'learning_rate'?"),
        ),
        Refused(
            f"{info.name}-foreach",
            lambda: factory(foreach=True),
            TypeError,
            ("'foreach'", "jax.jit"),
        ),
    ]
    if "b1" in info.numeric_arguments():
        rows.append(
            Refused(
                f"{info.name}-betas",
                lambda: factory(betas=(0.9, 0.99)),
                TypeError,
                ("'betas'", "'b1' and 'b2'"),
            )
        )
    return rows


@pytest.mark.parametrize(
    "row", params_of([row for info in REGISTRY for row in torch_spelling_rows(info)])
)
def test_torch_spelling_names_the_optkit_argument(row: Refused) -> None:
    check_refused(row)


def test_the_wrapped_factories_keep_their_signature_and_work() -> None:
    assert list(inspect.signature(optkit.adam).parameters)[:2] == ["learning_rate", "b1"]
    assert optkit.adam.__name__ == "adam" and "torch.optim.Adam" in optkit.adam.__doc__
    assert optkit.adam(1e-3, b2=0.99).description.arguments["b2"] == 0.99


# --- set_hyperparams range checks -----------------------------------------------------------------


def out_of_range(name: str) -> float | None:
    """A value just outside ``name``'s range in RANGES, or None when both ends are open."""
    allowed = _validation.RANGES[name]
    if allowed.low is not None:
        return allowed.low - 1.0
    if allowed.high is not None:
        return allowed.high + 1.0
    return None


def set_rows(info: OptimizerInfo) -> list[Refused]:
    rows = []
    names = [
        name
        for name in info.numeric_arguments()
        if name in _validation.RANGES
        and not _validation.is_structural(name)
        and out_of_range(name) is not None
    ]
    state = optkit.inject_hyperparams(info.factory)(**info.typical).init(PARAMS)
    for name in names:
        value = out_of_range(name)
        rows.append(
            Refused(
                f"{info.name}-set-{name}-{value}",
                lambda name=name, value=value: optkit.set_hyperparams(state, **{name: value}),
                ValueError,
                (f"{name} must be in", repr(value)),
            )
        )
    return rows


def primitive_rows() -> list[Refused]:
    clip = optkit.inject_hyperparams(optkit.clip_by_global_norm)(1.0).init(PARAMS)
    adam = optkit.inject_hyperparams(optkit.scale_by_adam)().init(PARAMS)
    return [
        Refused(
            "clip-set-max_norm-negative",
            lambda: optkit.set_hyperparams(clip, max_norm=-1.0),
            ValueError,
            ("max_norm must be in [0.0, inf]", "-1.0"),
        ),
        Refused(
            "scale_by_adam-set-eps_root-negative",
            lambda: optkit.set_hyperparams(adam, eps_root=-1e-8),
            ValueError,
            ("eps_root must be in [0.0, inf]",),
        ),
        Refused(
            "scale_by_adam-set-b2-nan",
            lambda: optkit.set_hyperparams(adam, b2=math.nan),
            ValueError,
            ("b2 must be in [0.0, 1.0)", "NaN"),
        ),
        Refused(
            "scale_by_adam-set-b1-vector",
            lambda: optkit.set_hyperparams(adam, b1=jnp.ones(2)),
            ValueError,
            ("b1 must be a scalar",),
        ),
        Refused(
            "scale_by_adam-set-lr-torch-spelling",
            lambda: optkit.set_hyperparams(adam, lr=0.1),
            ValueError,
            ("no injected hyperparameter named 'lr'", "eps_root"),
        ),
    ]


@pytest.mark.parametrize(
    "row", params_of([row for info in REGISTRY for row in set_rows(info)] + primitive_rows())
)
def test_set_hyperparams_range_checks_every_value(row: Refused) -> None:
    check_refused(row)


# --- schedules --------------------------------------------------------------------------------


BAD_SCHEDULES = {
    "bool": (lambda count: True, TypeError, "returned bool True"),
    "jax-bool": (lambda count: count < 10, TypeError, "returned an array of dtype bool"),
    "complex": (lambda count: 0.1 + 0.1j, TypeError, "returned complex"),
    "jax-complex": (lambda count: jnp.complex64(0.1), TypeError, "dtype complex64"),
    "vector": (lambda count: jnp.full(2, 0.1), ValueError, "returned shape (2,)"),
    "nan": (lambda count: jnp.nan * count, ValueError, "NaN"),
    "string": (lambda count: "0.1", TypeError, "returned str"),
    "no-count-argument": (lambda: 0.1, TypeError, "failed on the count 0"),
}


def schedule_rows() -> list[Refused]:
    rows = []
    for kind, (schedule, error, fragment) in BAD_SCHEDULES.items():
        rows.append(
            Refused(
                f"sgd-learning_rate-{kind}",
                lambda schedule=schedule: optkit.sgd(learning_rate=schedule),
                error,
                ("learning_rate", "count 0", fragment),
            )
        )
        rows.append(
            Refused(
                f"injected-adam-b1-{kind}",
                lambda schedule=schedule: optkit.inject_hyperparams(optkit.adam)(b1=schedule),
                error,
                ("b1", "count 0", fragment),
            )
        )
    return rows


@pytest.mark.parametrize("row", params_of(schedule_rows()))
def test_bad_schedule_is_refused_at_construction(row: Refused) -> None:
    check_refused(row)


def python_branching(count):
    return 0.1 if count < 10 else 0.01  # Python control flow: fails on a traced count


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: optkit.sgd(learning_rate=python_branching), "learning_rate"),
        (
            lambda: optkit.inject_hyperparams(optkit.sgd)(learning_rate=python_branching),
            "learning_rate",
        ),
        (lambda: optkit.inject_hyperparams(optkit.adam)(0.1, b1=python_branching), "b1"),
    ],
    ids=["sgd-learning_rate", "injected-sgd-learning_rate", "injected-adam-b1"],
)
def test_schedule_failing_under_jit_names_its_argument(make, name) -> None:
    tx = make()  # on the concrete count 0 the schedule runs: construction succeeds
    state = tx.init(PARAMS)
    with pytest.raises(TypeError) as raised:
        jax.jit(tx.update)(PARAMS, state, PARAMS)
    message = str(raised.value)
    assert f"the schedule given as {name} failed on the traced update count" in message
    assert "jnp.where" in message
    assert isinstance(raised.value.__cause__, jax.errors.ConcretizationTypeError)


def test_set_hyperparams_checks_the_value_as_stored() -> None:
    # 0.9999 rounds to 1.0 in bfloat16, where b2 must stay below 1.
    tx = optkit.inject_hyperparams(optkit.adam, hyperparam_dtype=jnp.bfloat16)(0.1, b2=0.99)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"b2=0.9999 is 1.0 in the state's bfloat16"):
        optkit.set_hyperparams(state, b2=0.9999)
