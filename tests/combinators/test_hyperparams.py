"""inject_hyperparams, set_hyperparams and get_hyperparams: torch's ``param_groups[i]["lr"] = x``.

Expectations come from elsewhere, never from the code under test: the same optimizer built without
injection (or with an equivalent schedule), torch.optim with its ``param_groups`` edited between
steps (marked ``torch``), or a hand computation. Every jitted step counts its traces, so each
trajectory test also checks that changing values never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import _validation
from tests.parity import problem
from tests.parity.cases import to_torch_kwargs
from tests.parity.runner import compare, stack
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import BY_NAME, REGISTRY
from tests.support.torch_oracle import require_torch

inject = optkit.inject_hyperparams
STEPS = 30
# Same optimizer, same math, hyperparameters as arrays instead of Python floats.
SAME_MATH = {"rtol": 1e-12, "atol": 1e-14}
# optkit vs torch.optim in float64: the parity suite's spec.
TORCH_FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}

Values = dict[str, Any]
Task = problem.Problem
Change = tuple[int, int | None, Values]
"""Before the ``step``-th update (0-based), set ``values`` in param group ``group`` (None: all)."""


def start_params(task: Task = problem.STANDARD) -> dict[str, jax.Array]:
    return {name: jnp.asarray(value) for name, value in task.initial_params(np.float64).items()}


def task_of(factory: Callable[..., optkit.GradientTransformation]) -> Task:
    """The parity problem of ``factory``'s registry row (Muon's matrices, LBFGS's convex loss),
    else the standard one."""
    info = BY_NAME.get(factory.__name__)
    return problem.PROBLEMS[info.problem if info is not None else "standard"]


def update_args(factory: Callable[..., optkit.GradientTransformation], task: Task) -> Values:
    """The extra update arguments a registry optimizer needs on ``task`` (LBFGS: the loss)."""
    info = BY_NAME.get(factory.__name__)
    return {} if info is None else info.update_args(task.jax_loss)


def numpy_tree(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        name: (p.detach().numpy() if hasattr(p, "detach") else np.asarray(p)).copy()
        for name, p in params.items()
    }


def assert_no_weak_types(tree: Any) -> None:
    weak = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jax.typeof(leaf).weak_type
    ]
    assert not weak, f"weakly typed state leaves (would retrace when replaced): {weak}"


def signature(tree: Any) -> Any:
    """Structure, shapes, dtypes and weak types: what decides whether jit retraces."""
    return jax.tree.map(lambda x: (x.shape, x.dtype, jax.typeof(x).weak_type), tree)


@dataclasses.dataclass
class JittedStep:
    """``(params, state) -> (params, state)`` for ``tx`` on a parity problem, counting traces."""

    tx: optkit.GradientTransformation
    task: Task = problem.STANDARD
    extra: Values = dataclasses.field(default_factory=dict)
    traces: int = 0

    def __post_init__(self) -> None:
        def step(params, grads, state):
            self.traces += 1
            updates, state = self.tx.update(grads, state, params, **self.extra)
            return optkit.apply_updates(params, updates), state

        self.jitted = jax.jit(step)

    def __call__(self, params, state):
        _, grads = self.task.jax_value_and_grad(params)
        return self.jitted(params, grads, state)


def run_optkit(
    tx: optkit.GradientTransformation,
    changes: Sequence[Change] = (),
    steps: int = STEPS,
    *,
    jit: bool = True,
    task: Task = problem.STANDARD,
    extra: Values | None = None,
) -> dict[str, np.ndarray]:
    """The params before and after each update on ``task``, applying ``changes`` with
    set_hyperparams; ``extra`` are the update's extra arguments.

    Jitted, it asserts that the step was traced once however many values were changed. Eager
    (``jit=False``) skips the ~0.5 s XLA compile, for comparisons whose point is the math.
    """
    extra = extra or {}
    step = JittedStep(tx, task, extra)
    params = start_params(task)
    state = tx.init(params)
    path = [numpy_tree(params)]
    for k in range(steps):
        for at, group, values in changes:
            if at == k:
                state = optkit.set_hyperparams(state, group=group, **values)
        if jit:
            params, state = step(params, state)
        else:
            _, grads = task.jax_value_and_grad(params)
            updates, state = tx.update(grads, state, params, **extra)
            params = optkit.apply_updates(params, updates)
        path.append(numpy_tree(params))
    if jit:
        assert step.traces == 1, f"the jitted step was traced {step.traces} times"
        assert step.jitted._cache_size() == 1
    assert_no_weak_types(state)
    return stack(path)


def set_torch_group(group: dict[str, Any], values: Values) -> None:
    """torch's way: edit the group dict; b1/b2 are the two halves of ``betas``."""
    for name, value in values.items():
        if name in ("b1", "b2"):
            b1, b2 = group["betas"]
            group["betas"] = (value, b2) if name == "b1" else (b1, value)
        else:
            group["lr" if name == "learning_rate" else name] = value


def run_torch(
    optimizer_name: str,
    kwargs: Values,
    changes: Sequence[Change] = (),
    groups: Sequence[tuple[Sequence[str], Values]] | None = None,
    steps: int = STEPS,
    sparse_grads: bool = False,
    task: Task = problem.STANDARD,
    closure: bool = False,
) -> dict[str, np.ndarray]:
    """torch's trajectory; with ``closure``, each step is ``optimizer.step(closure)``."""
    import torch

    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in task.initial_params(np.float64).items()
    }
    if groups is None:
        spec: Any = list(params.values())
    else:
        spec = [
            {"params": [params[name] for name in names], **to_torch_kwargs(overrides)}
            for names, overrides in groups
        ]
    optimizer = getattr(torch.optim, optimizer_name)(spec, **to_torch_kwargs(kwargs))
    path = [numpy_tree(params)]
    for k in range(steps):
        for at, group, values in changes:
            if at == k:
                targets = (
                    optimizer.param_groups if group is None else [optimizer.param_groups[group]]
                )
                for target in targets:
                    set_torch_group(target, values)

        def evaluate() -> Any:
            optimizer.zero_grad()
            loss = task.torch_loss(params)
            loss.backward()
            if sparse_grads:  # torch's SparseAdam takes sparse-layout gradients only
                for p in params.values():
                    p.grad = p.grad.to_sparse()
            return loss

        if closure:
            optimizer.step(evaluate)
        else:
            evaluate()
            optimizer.step()
        path.append(numpy_tree(params))
    return stack(path)


# --- 1. inject_hyperparams(f)(**kw) is f(**kw) ---------------------------------------------------

SAME_AS_PLAIN: dict[str, tuple[Callable[..., optkit.GradientTransformation], Values]] = {
    # Every parity variant of every registry row ...
    **{
        f"{info.name}-{variant}": (info.factory, kwargs)
        for info in REGISTRY
        for variant, kwargs in info.variants.items()
    },
    # ... and zeros, which a plain optimizer prunes from its chain and an injected one keeps.
    # torch's own spelling of the defaults: SGD(..., dampening=0, nesterov=True).
    "sgd_nesterov_explicit_zero_dampening": (
        optkit.sgd,
        {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.0, "nesterov": True},
    ),
    "sgd_zeros": (
        optkit.sgd,
        {"learning_rate": 0.05, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    ),
    # torch keeps no buffer at momentum 0, so the dampening never applies.
    "sgd_zero_momentum_dampening": (
        optkit.sgd,
        {"learning_rate": 0.05, "momentum": 0.0, "dampening": 0.5},
    ),
    "adam_amsgrad_zero_wd": (
        optkit.adam,
        {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True, "weight_decay": 0.0},
    ),
    "adam_zero_b1": (optkit.adam, {"learning_rate": 0.01, "b1": 0.0, "eps": 0.0}),
    "adamw_zero_wd": (optkit.adamw, {"learning_rate": 0.01, "weight_decay": 0.0}),
    "adagrad_zeros": (optkit.adagrad, {"learning_rate": 0.1, "lr_decay": 0.0, "weight_decay": 0.0}),
    "rmsprop_zeros": (
        optkit.rmsprop,
        {"learning_rate": 0.01, "momentum": 0.0, "weight_decay": 0.0, "centered": True},
    ),
}


@functools.cache
def plain_path(case_id: str) -> dict[str, np.ndarray]:
    factory, kwargs = SAME_AS_PLAIN[case_id]
    task = task_of(factory)
    return run_optkit(
        factory(**kwargs), steps=20, jit=False, task=task, extra=update_args(factory, task)
    )


# Most rows run eagerly, to skip ~30 XLA compiles; these also run jitted (hyperparameters traced,
# zeros included), as do all the torch cases below.
JITTED_ROWS = {"sgd_zeros", "adam_amsgrad_zero_wd", "rmsprop-centered_momentum_wd"}


@pytest.mark.parametrize("case_id", list(SAME_AS_PLAIN))
def test_injected_matches_plain_optimizer(case_id: str) -> None:
    factory, kwargs = SAME_AS_PLAIN[case_id]
    injected = run_optkit(
        inject(factory)(**kwargs),
        steps=20,
        jit=case_id in JITTED_ROWS,
        task=task_of(factory),
        extra=update_args(factory, task_of(factory)),
    )
    mismatch = compare(injected, plain_path(case_id), **SAME_MATH)
    assert mismatch is None, f"{case_id}: {mismatch}"


@pytest.mark.parametrize("case_id", list(SAME_AS_PLAIN))
def test_numeric_arguments_are_injected_as_given(case_id: str) -> None:
    factory, kwargs = SAME_AS_PLAIN[case_id]
    state = inject(factory)(**kwargs).init(start_params(task_of(factory)))
    # Every numeric argument, defaults included (optax's contract), except a zero default of
    # momentum, weight_decay or lr_decay, which removes a step at construction (held only when
    # given). Bools, strings, tuples (Adafactor's eps, Rprop's etas) and structural integers
    # (loop counts, Muon's ns_steps) stay static.
    switches = {"momentum", "weight_decay", "lr_decay"}
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(factory).parameters.items()
        if not (name in switches and parameter.default == 0)
    }
    numeric = {
        k: v
        for k, v in {**defaults, **kwargs}.items()
        if isinstance(v, numbers.Real)
        and not isinstance(v, bool)
        and not _validation.is_structural(k)
    }
    got = optkit.get_hyperparams(state)
    assert got.keys() == numeric.keys()
    for name, value in numeric.items():
        assert got[name].dtype == jnp.float64, name
        assert float(got[name]) == value, name
    assert_no_weak_types(state)


# --- 2. set_hyperparams mid-run is torch's param_groups[i][name] = x -----------------------------


@dataclasses.dataclass(frozen=True)
class TorchCase:
    id: str
    factory: Callable[..., optkit.GradientTransformation]
    torch_optimizer: str
    kwargs: Values
    changes: tuple[Change, ...]
    groups: tuple[tuple[tuple[str, ...], Values], ...] | None = None
    changes_matter: bool = True  # torch reads the changed values (see the registry's field)
    sparse_grads: bool = False  # torch's side needs sparse-layout gradients (SparseAdam)
    closure: bool = False

    @property
    def task(self) -> problem.Problem:
        return task_of(self.factory)

    def make_optkit(self) -> optkit.GradientTransformation:
        if self.groups is None:
            return inject(self.factory)(**self.kwargs)
        spec = [{"params": list(names), **overrides} for names, overrides in self.groups]
        return optkit.param_groups(inject(self.factory), spec, **self.kwargs)


def lr_changes(*values: float, every: int = 8) -> tuple[Change, ...]:
    return tuple((every * (i + 1), None, {"learning_rate": v}) for i, v in enumerate(values))


TWO_GROUPS = ((("scalar", "vector"), {}), (("matrix", "tensor"), {"learning_rate": 0.01}))


def runtime_case(info: OptimizerInfo) -> TorchCase:
    """The registry row's typical set-up at its first variant's learning rate, injected, with its
    ``runtime_changes`` after 10 and 20 updates. Every changed name is passed at construction
    (at its default if the set-up does not give it) so that it is injected. (The typical set-up
    has every buffer on: torch cannot switch RMSprop's momentum on mid-run.)"""
    learning_rate = next(iter(info.variants.values()))["learning_rate"]
    changed = {name for values in info.runtime_changes for name in values}
    defaults = {name: info.default(name) for name in changed}
    kwargs = {**defaults, **info.typical, "learning_rate": learning_rate}
    changes = tuple(
        (step, None, dict(values))
        for step, values in zip((10, 20), info.runtime_changes, strict=True)
    )
    return TorchCase(
        f"{info.name}-runtime",
        info.factory,
        info.torch_class,
        kwargs,
        changes,
        changes_matter=info.runtime_changes_matter,
        sparse_grads=info.sparse_gradients,
        closure=info.closure,
    )


TORCH_CASES = [
    *(runtime_case(info) for info in REGISTRY),
    TorchCase(
        "sgd_momentum_lr",
        optkit.sgd,
        "SGD",
        {"learning_rate": 0.02, "momentum": 0.9},
        lr_changes(0.005, 0.03, 0.0),
    ),
    TorchCase(
        "sgd_nesterov_lr",
        optkit.sgd,
        "SGD",
        {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        lr_changes(0.005, 0.03),
    ),
    TorchCase("adam_lr", optkit.adam, "Adam", {"learning_rate": 0.01}, lr_changes(0.03, 0.002)),
    TorchCase(
        "adamw_lr",
        optkit.adamw,
        "AdamW",
        {"learning_rate": 0.01, "weight_decay": 0.1},
        lr_changes(0.03, 0.002, 0.05),
    ),
    TorchCase(
        "rmsprop_lr",
        optkit.rmsprop,
        "RMSprop",
        {"learning_rate": 0.01, "momentum": 0.5, "centered": True},
        lr_changes(0.003, 0.02),
    ),
    TorchCase(
        "adagrad_lr_and_lr_decay",
        optkit.adagrad,
        "Adagrad",
        {"learning_rate": 0.1, "lr_decay": 0.05},
        ((10, None, {"learning_rate": 0.05}), (20, None, {"lr_decay": 0.2})),
    ),
    TorchCase(
        "sgd_momentum_weight_decay_dampening",
        optkit.sgd,
        "SGD",
        {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0},
        (
            (10, None, {"momentum": 0.5, "weight_decay": 0.1}),
            (20, None, {"momentum": 0.8, "dampening": 0.3, "learning_rate": 0.01}),
        ),
    ),
    # The momentum buffer is kept at momentum 0 "so that it can be raised later"; torch has no
    # buffer until the first step with momentum, which starts it from the gradient (a clone).
    TorchCase(
        "sgd_momentum_raised_from_zero",
        optkit.sgd,
        "SGD",
        {"learning_rate": 0.02, "momentum": 0.0},
        ((10, None, {"momentum": 0.9}),),
    ),
    TorchCase(
        "adam_betas_weight_decay",
        optkit.adam,
        "Adam",
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0},
        (
            (10, None, {"b1": 0.8, "b2": 0.99}),
            (20, None, {"weight_decay": 0.1, "b1": 0.95}),
        ),
    ),
    TorchCase(
        "adamw_betas_weight_decay",
        optkit.adamw,
        "AdamW",
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.999, "weight_decay": 0.1, "amsgrad": True},
        (
            (10, None, {"weight_decay": 0.0, "b2": 0.9}),
            (20, None, {"weight_decay": 0.3, "learning_rate": 0.02}),
        ),
    ),
    TorchCase(
        "rmsprop_alpha_momentum_weight_decay",
        optkit.rmsprop,
        "RMSprop",
        {
            "learning_rate": 0.01,
            "alpha": 0.99,
            "eps": 1e-8,
            "momentum": 0.5,
            "weight_decay": 0.0,
        },
        (
            (10, None, {"alpha": 0.9, "momentum": 0.8}),
            (20, None, {"weight_decay": 0.1, "eps": 1e-3}),
        ),
    ),
    TorchCase(
        "groups_sgd_lr_per_group",
        optkit.sgd,
        "SGD",
        {"learning_rate": 0.02, "momentum": 0.9},
        (
            (10, 0, {"learning_rate": 0.05}),
            (15, 1, {"learning_rate": 0.002}),
            (20, None, {"momentum": 0.5}),  # no group: every group, as torch's loop over groups
            (25, 1, {"learning_rate": 0.03, "weight_decay": 0.1}),
        ),
        groups=(
            (("scalar", "vector"), {"weight_decay": 0.0}),
            (("matrix", "tensor"), {"learning_rate": 0.01, "weight_decay": 0.0}),
        ),
    ),
    TorchCase(
        "groups_adam_betas_one_group",
        optkit.adam,
        "Adam",
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.999},
        ((10, 1, {"b1": 0.7}), (20, 0, {"b2": 0.9, "learning_rate": 0.02})),
        groups=TWO_GROUPS,
    ),
]


@pytest.mark.torch
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda case: case.id)
def test_set_hyperparams_mid_run_matches_torch(case: TorchCase) -> None:
    require_torch()
    groups = None if case.groups is None else list(case.groups)
    task = case.task
    on_task = {"task": task, "closure": case.closure, "sparse_grads": case.sparse_grads}
    expected = run_torch(case.torch_optimizer, case.kwargs, case.changes, groups, **on_task)
    unchanged = run_torch(case.torch_optimizer, case.kwargs, (), groups, **on_task)
    # The changes must matter, or agreeing on them proves nothing; where torch ignores them
    # (Rprop's lr), optkit must ignore them too.
    changed = compare(expected, unchanged, rtol=1e-6, atol=1e-8) is not None
    assert changed == case.changes_matter
    got = run_optkit(
        case.make_optkit(), case.changes, task=task, extra=update_args(case.factory, task)
    )
    mismatch = compare(got, expected, **TORCH_FLOAT64)
    assert mismatch is None, f"{case.id} vs torch.optim.{case.torch_optimizer}: {mismatch}"


def test_momentum_buffer_follows_torch_when_momentum_goes_to_zero_and_back() -> None:
    """Hand-computed with a constant gradient 1 and lr 1, following torch.optim.SGD's code: at
    momentum 0 no buffer is read or written; the first step with momentum starts the buffer as a
    copy of the gradient; a buffer left over from earlier is picked up again, unchanged."""
    tx = inject(optkit.sgd)(learning_rate=1.0, momentum=0.0)
    params = jnp.zeros(1)
    state = tx.init(params)
    momentum_per_step = [0.0, 0.9, 0.9, 0.0, 0.0, 0.9]
    # buffer: none, 1, 1.9, 1.9 (untouched), 1.9, 0.9 * 1.9 + 1
    expected = [-1.0, -1.0, -1.9, -1.0, -1.0, -2.71]
    got = []
    for momentum in momentum_per_step:
        state = optkit.set_hyperparams(state, momentum=momentum)
        updates, state = tx.update(jnp.ones(1), state, params)
        got.append(float(updates[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nesterov_with_momentum_set_to_zero_is_plain_sgd(jit: bool) -> None:
    """torch checks nesterov's needs in the constructor only; a step at momentum 0 skips the
    momentum branch: p -= lr * g. Eager and jitted updates must agree on that."""
    tx = inject(optkit.sgd)(learning_rate=0.5, momentum=0.9, nesterov=True)
    update = jax.jit(tx.update) if jit else tx.update
    params = jnp.zeros(2)
    state = optkit.set_hyperparams(tx.init(params), momentum=0.0)
    grads = jnp.array([1.0, -2.0])
    for _ in range(2):
        updates, state = update(grads, state, params)
        np.testing.assert_allclose(updates, [-0.5, 1.0], rtol=1e-15)


def test_changing_learning_rate_matches_a_piecewise_schedule() -> None:
    """Without torch: setting lr before update k is the schedule whose k-th value is that lr."""
    lrs = np.full(STEPS, 0.02)
    lrs[8:] = 0.005
    lrs[16:] = 0.03
    schedule = lambda count: jnp.asarray(lrs)[count]
    expected = run_optkit(optkit.sgd(learning_rate=schedule, momentum=0.9), jit=False)
    got = run_optkit(inject(optkit.sgd)(learning_rate=0.02, momentum=0.9), lr_changes(0.005, 0.03))
    assert compare(got, expected, **SAME_MATH) is None


# --- 3. compile once ------------------------------------------------------------------------------


def test_jitted_step_compiles_once_for_any_kind_of_value() -> None:
    tx = inject(optkit.adam)(learning_rate=0.01, b1=0.9, b2=0.999, weight_decay=0.0)
    step = JittedStep(tx)
    params = start_params()
    state = tx.init(params)
    before = signature(state)
    values = [
        0.02,
        np.float32(0.005),
        np.float64(0.01),
        jnp.asarray(0.03, dtype=jnp.float32),
        jnp.asarray(0.25, dtype=jnp.bfloat16),
        jnp.asarray(0.001, dtype=jnp.float64),
        np.asarray(0.004),
        0,  # a Python int: freeze
    ]
    for i, value in enumerate(values):
        state = optkit.set_hyperparams(
            state, learning_rate=value, b1=0.5 + 0.05 * i, weight_decay=np.float16(0.125)
        )
        hyperparams = optkit.get_hyperparams(state)
        assert hyperparams["learning_rate"].dtype == jnp.float64  # the stored dtype is kept
        assert float(hyperparams["learning_rate"]) == float(np.asarray(value, np.float64))
        assert float(hyperparams["b1"]) == pytest.approx(0.5 + 0.05 * i, rel=1e-15)
        assert signature(state) == before
        params, state = step(params, state)
        assert signature(state) == before
    assert step.traces == 1
    assert step.jitted._cache_size() == 1


def test_float32_hyperparameter_stays_float32() -> None:
    tx = inject(optkit.sgd)(learning_rate=np.float32(0.05), momentum=jnp.float32(0.9))
    step = JittedStep(tx)
    params = start_params()
    state = tx.init(params)
    given = ("learning_rate", "momentum")
    assert {optkit.get_hyperparams(state)[name].dtype for name in given} == {jnp.dtype(jnp.float32)}
    for value in (0.01, np.float64(0.02), jnp.asarray(0.03, dtype=jnp.float64), 1):
        state = optkit.set_hyperparams(state, learning_rate=value)
        assert optkit.get_hyperparams(state)["learning_rate"].dtype == jnp.float32
        assert float(optkit.get_hyperparams(state)["learning_rate"]) == float(np.float32(value))
        params, state = step(params, state)
        assert params["matrix"].dtype == jnp.float64  # the params' dtype is not touched
    assert step.traces == 1
    assert_no_weak_types(state)


@pytest.mark.parametrize("case_id", list(SAME_AS_PLAIN))
def test_no_weak_types_after_init_set_and_update(case_id: str) -> None:
    factory, kwargs = SAME_AS_PLAIN[case_id]
    tx = inject(factory)(**kwargs)
    task = task_of(factory)
    params = start_params(task)
    state = tx.init(params)
    assert_no_weak_types(state)
    state = optkit.set_hyperparams(state, learning_rate=0.5)
    assert_no_weak_types(state)
    _, grads = task.jax_value_and_grad(params)
    _, new_state = tx.update(grads, state, params, **update_args(factory, task))
    assert signature(new_state) == signature(state)


def test_integer_valued_hyperparameter_is_stored_as_float() -> None:
    state = inject(optkit.sgd)(learning_rate=1, momentum=0).init(jnp.zeros(2))
    for value in optkit.get_hyperparams(state).values():
        assert value.dtype == jnp.float64
    assert_no_weak_types(state)


def test_lax_scan_carry_with_values_set_inside_the_loop() -> None:
    """The state is a scan carry; each iteration sets a traced learning rate from ``xs``."""
    lrs = jnp.linspace(0.03, 0.002, 25)
    tx = inject(optkit.sgd)(learning_rate=0.0, momentum=0.9, weight_decay=0.01)

    def body(carry, lr):
        params, state = carry
        state = optkit.set_hyperparams(state, learning_rate=lr)
        grads = jax.grad(problem.jax_loss)(params)
        updates, state = tx.update(grads, state, params)
        return (optkit.apply_updates(params, updates), state), params["vector"]

    params = start_params()
    init = (params, tx.init(params))
    (final, state), _ = jax.jit(lambda carry: jax.lax.scan(body, carry, lrs))(init)
    assert signature(state) == signature(init[1])
    assert_no_weak_types(state)

    reference = optkit.sgd(learning_rate=lambda count: lrs[count], momentum=0.9, weight_decay=0.01)
    expected, ref_state = start_params(), reference.init(params)
    for _ in range(len(lrs)):
        _, grads = problem.jax_value_and_grad(expected)
        updates, ref_state = reference.update(grads, ref_state, expected)
        expected = optkit.apply_updates(expected, updates)
    for name in expected:
        np.testing.assert_allclose(final[name], expected[name], rtol=1e-12, atol=1e-14)
    assert float(optkit.get_hyperparams(state)["learning_rate"]) == float(lrs[-1])


# --- 4. schedules -------------------------------------------------------------------------------


def test_kth_update_uses_schedule_of_k_and_get_reports_it() -> None:
    schedule = lambda count: 0.1 / (1.0 + count)
    tx = inject(optkit.sgd)(learning_rate=schedule)
    state = tx.init(jnp.zeros(2))
    for k in range(6):
        # The injected weight_decay (0.0 by default) can be raised later, so it reads params.
        updates, state = tx.update(jnp.array([1.0, -2.0]), state, jnp.zeros(2))
        np.testing.assert_allclose(updates, [-0.1 / (1 + k), 0.2 / (1 + k)], rtol=1e-15)
        used = optkit.get_hyperparams(state)["learning_rate"]
        assert float(used) == pytest.approx(0.1 / (1 + k), rel=1e-15)
        assert used.dtype == jnp.float64


@pytest.mark.parametrize("name", [info.name for info in REGISTRY])
def test_schedule_trajectory_matches_plain_optimizer(name) -> None:
    info = BY_NAME[name]
    schedule = lambda count: 0.5 * next(iter(info.variants.values()))["learning_rate"] * 0.9**count
    kwargs = {**info.typical, "learning_rate": schedule}
    task = problem.PROBLEMS[info.problem]
    extra = info.update_args(task.jax_loss)
    expected = run_optkit(info.factory(**kwargs), steps=15, jit=False, task=task, extra=extra)
    # One row with the count traced under jit; the rest eager, to skip XLA compiles.
    got = run_optkit(
        inject(info.factory)(**kwargs), steps=15, jit=name == "sgd", task=task, extra=extra
    )
    assert compare(got, expected, **SAME_MATH) is None


def test_schedule_driven_name_cannot_be_set_but_others_can() -> None:
    tx = inject(optkit.sgd)(learning_rate=lambda count: 0.1 * 0.5**count, momentum=0.9)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"learning_rate.*schedule"):
        optkit.set_hyperparams(state, learning_rate=0.3)
    state = optkit.set_hyperparams(state, momentum=0.5)
    assert float(optkit.get_hyperparams(state)["momentum"]) == 0.5


def no_bias_decay(params):
    return {name: name != "vector" for name in params}


def test_static_args_passes_a_callable_mask_through() -> None:
    kwargs = {"learning_rate": 0.01, "weight_decay": 0.5, "mask": no_bias_decay}
    tx = inject(optkit.adamw, static_args=("mask",))(**kwargs)
    got = run_optkit(tx, steps=12)
    assert "mask" not in optkit.get_hyperparams(tx.init(start_params()))
    expected = run_optkit(optkit.adamw(**kwargs), steps=12, jit=False)
    assert compare(got, expected, **SAME_MATH) is None
    # The mask bites: decaying every leaf gives another path.
    decay_all = optkit.adamw(learning_rate=0.01, weight_decay=0.5)
    everything = run_optkit(decay_all, steps=12, jit=False)
    assert not np.allclose(got["vector"], everything["vector"], rtol=1e-6)


@pytest.mark.parametrize(
    "mask",
    [no_bias_decay, lambda params: jax.tree.map(lambda leaf: leaf.ndim > 1, params)],
    ids=["dict_of_names", "tree_map"],
)
def test_callable_mask_without_static_args_fails_at_construction(mask) -> None:
    """Without static_args the mask is taken for a schedule of the count: the error says so."""
    with pytest.raises(TypeError, match=r"mask is callable.*static_args=\('mask',\)"):
        inject(optkit.adamw)(learning_rate=0.01, weight_decay=0.5, mask=mask)


# --- 5. errors ----------------------------------------------------------------------------------


@pytest.fixture
def adam_state():
    return inject(optkit.adam)(learning_rate=0.01, b1=0.9, weight_decay=0.0).init(start_params())


def test_unknown_name_lists_the_settable_ones(adam_state) -> None:
    with pytest.raises(ValueError, match="lr") as error:
        optkit.set_hyperparams(adam_state, lr=0.1)
    assert "optkit spells torch's 'lr' as 'learning_rate'" in str(error.value)
    for name in ("b1", "b2", "eps", "learning_rate", "weight_decay"):
        assert name in str(error.value)
    # b2 was left at its default: injected all the same (optax's contract), so settable.
    state = optkit.set_hyperparams(adam_state, b2=0.9)
    assert float(optkit.get_hyperparams(state)["b2"]) == 0.9


@pytest.mark.parametrize("call", ["get", "set"])
def test_state_without_injected_hyperparameters(call) -> None:
    state = optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adam(0.1)).init(start_params())
    with pytest.raises(ValueError, match="inject_hyperparams"):
        if call == "get":
            optkit.get_hyperparams(state)
        else:
            optkit.set_hyperparams(state, learning_rate=0.1)


@pytest.fixture
def groups_state():
    tx = optkit.param_groups(
        inject(optkit.sgd),
        [{"params": ["scalar", "vector"]}, {"params": "w", "learning_rate": 0.5}],
        learning_rate=0.1,
    )
    return tx.init({"scalar": jnp.ones(()), "vector": jnp.ones(3), "w": jnp.ones(2)})


def test_several_injected_states_need_group(groups_state) -> None:
    with pytest.raises(ValueError, match="group"):
        optkit.get_hyperparams(groups_state)
    assert float(optkit.get_hyperparams(groups_state, group=1)["learning_rate"]) == 0.5


def test_single_param_group_needs_no_group() -> None:
    """A single-group param_groups still needs no group= (one injected state)."""
    tx = optkit.param_groups(inject(optkit.sgd), [{"params": "**"}], learning_rate=0.1)
    state = tx.init({"w": jnp.ones(2)})
    assert float(optkit.get_hyperparams(state)["learning_rate"]) == 0.1


@pytest.mark.parametrize("group", [2, -1, 10])
def test_group_out_of_range(groups_state, group) -> None:
    with pytest.raises(ValueError, match=rf"group must be in \[0, 2\), got {group}"):
        optkit.set_hyperparams(groups_state, group=group, learning_rate=0.1)
    with pytest.raises(ValueError, match="group"):
        optkit.get_hyperparams(groups_state, group=group)


def test_group_without_param_groups(adam_state) -> None:
    with pytest.raises(ValueError, match="param_groups"):
        optkit.set_hyperparams(adam_state, group=0, learning_rate=0.1)
    with pytest.raises(ValueError, match="param_groups"):
        optkit.get_hyperparams(adam_state, group=0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("learning_rate", -1.0),
        ("learning_rate", float("nan")),
        ("b1", 1.0),
        ("b1", 1.5),
        ("b1", -0.1),
        ("weight_decay", np.float32(-0.5)),
        ("learning_rate", jnp.asarray(-1e-3)),
    ],
)
def test_out_of_range_value_names_the_hyperparameter(adam_state, name, value) -> None:
    with pytest.raises(ValueError, match=name):
        optkit.set_hyperparams(adam_state, **{name: value})


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_dampening_range_is_sgds(value) -> None:
    """optkit.sgd and torch.optim.SGD take dampening in [0, 1]; set_hyperparams must agree."""
    tx = inject(optkit.sgd)(learning_rate=0.1, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="dampening"):
        inject(optkit.sgd)(learning_rate=0.1, momentum=0.9, dampening=value)
    with pytest.raises(ValueError, match="dampening"):
        optkit.set_hyperparams(tx.init(jnp.zeros(2)), dampening=value)


@pytest.mark.parametrize(
    "value", [jnp.ones(2), np.array([0.1, 0.2]), jnp.ones((1, 1))], ids=["jax", "numpy", "1x1"]
)
def test_non_scalar_value(adam_state, value) -> None:
    with pytest.raises(ValueError, match="scalar"):
        optkit.set_hyperparams(adam_state, learning_rate=value)


def test_failed_set_leaves_the_state_alone(adam_state) -> None:
    """A bad name or value anywhere in the call sets nothing (all-or-nothing, like a new dict)."""
    with pytest.raises(ValueError):
        optkit.set_hyperparams(adam_state, learning_rate=0.5, b1=2.0)
    assert float(optkit.get_hyperparams(adam_state)["learning_rate"]) == 0.01


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (optkit.adam, {"learning_rate": -1.0}, "learning_rate"),
        (optkit.adam, {"b1": 1.0}, "b1"),
        (optkit.rmsprop, {"alpha": -0.5}, "alpha"),
        (optkit.sgd, {"momentum": -0.9}, "momentum"),
        (optkit.sgd, {"momentum": 0.0, "nesterov": True}, "nesterov"),
        (optkit.adagrad, {"lr_decay": -1.0}, "lr_decay"),
    ],
)
def test_invalid_hyperparameters_fail_at_construction(factory, kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        inject(factory)(**kwargs)


# --- 6. nesting ---------------------------------------------------------------------------------


def assert_only_these_changed(before: Any, after: Any, targets: Callable[[str], bool], value):
    """Same structure; leaves whose path satisfies ``targets`` hold ``value`` in their old dtype,
    every other leaf is bit-identical."""
    old_leaves, old_def = jax.tree_util.tree_flatten_with_path(before)
    new_leaves, new_def = jax.tree_util.tree_flatten_with_path(after)
    assert new_def == old_def
    hits = 0
    for (path, old), (_, new) in zip(old_leaves, new_leaves, strict=True):
        where = jax.tree_util.keystr(path)
        assert new.dtype == old.dtype and new.shape == old.shape, where
        if targets(where):
            hits += 1
            assert np.asarray(new) == np.asarray(value, dtype=old.dtype), where
        else:
            assert np.asarray(new).tobytes() == np.asarray(old).tobytes(), where
    assert hits, "no leaf was expected to change: the target predicate matches nothing"
    return hits


def advanced(tx: optkit.GradientTransformation, steps: int = 3) -> Any:
    """A state with non-trivial buffers: ``steps`` updates from the start params."""
    params = start_params()
    state = tx.init(params)
    for _ in range(steps):
        _, grads = problem.jax_value_and_grad(params)
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)
    return state


def is_lr(where: str) -> bool:
    return where.endswith(".hyperparams['learning_rate']")


SPLIT = {"scalar": True, "vector": True, "matrix": False, "tensor": False}


@pytest.mark.parametrize(
    "make",
    [
        lambda inner: optkit.chain(optkit.clip_by_global_norm(1.0), inner),
        lambda inner: optkit.masked(inner, SPLIT),
        lambda inner: optkit.chain(
            optkit.clip_by_global_norm(1.0),
            optkit.masked(inner, SPLIT),
            optkit.masked(optkit.adam(0.1), {k: not v for k, v in SPLIT.items()}),
        ),
    ],
    ids=["chain", "masked", "chain_of_masked"],
)
def test_set_reaches_nested_state_and_leaves_the_rest_bit_identical(make) -> None:
    tx = make(inject(optkit.adam)(learning_rate=0.01, b1=0.9))
    before = advanced(tx)
    after = optkit.set_hyperparams(before, learning_rate=0.125)
    assert assert_only_these_changed(before, after, is_lr, 0.125) == 1
    assert float(optkit.get_hyperparams(after)["learning_rate"]) == 0.125
    assert float(optkit.get_hyperparams(after)["b1"]) == 0.9


def test_set_in_one_param_group_leaves_the_others_bit_identical() -> None:
    tx = optkit.param_groups(
        inject(optkit.adam),
        [{"params": ["scalar", "vector"]}, {"params": ["matrix", "tensor"], "b1": 0.8}],
        learning_rate=0.01,
        b1=0.9,
    )
    before = advanced(tx)
    after = optkit.set_hyperparams(before, group=1, learning_rate=0.25)
    assert_only_these_changed(
        before, after, lambda w: w.startswith(".groups[1]") and is_lr(w), 0.25
    )
    assert float(optkit.get_hyperparams(after, group=0)["learning_rate"]) == 0.01
    # Without group= every group gets the value, as torch's `for g in opt.param_groups`.
    every = optkit.set_hyperparams(before, learning_rate=0.5)
    assert assert_only_these_changed(before, every, is_lr, 0.5) == 2


@pytest.mark.parametrize(
    "wrap",
    [
        lambda inner: optkit.chain(optkit.clip_by_global_norm(2.0), inner),
        lambda inner: optkit.chain(
            optkit.masked(inner, SPLIT),
            optkit.masked(optkit.sgd(0.01), {k: not v for k, v in SPLIT.items()}),
        ),
    ],
    ids=["chain", "masked"],
)
def test_nested_set_changes_the_trajectory_like_a_schedule(wrap) -> None:
    """Setting the lr at step 6 inside a wrapper is the same as a schedule switching there."""
    schedule = lambda count: jnp.where(count < 6, 0.02, 0.004)
    expected = run_optkit(wrap(optkit.sgd(schedule, momentum=0.9)), steps=12, jit=False)
    got = run_optkit(
        wrap(inject(optkit.sgd)(learning_rate=0.02, momentum=0.9)),
        [(6, None, {"learning_rate": 0.004})],
        steps=12,
        jit=False,
    )
    assert compare(got, expected, **SAME_MATH) is None


# --- 7. flax TrainState -------------------------------------------------------------------------


def test_flax_train_state_set_between_steps_without_recompiling() -> None:
    from flax.training import train_state

    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)))
    y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    apply_fn = lambda p, inputs: jnp.tanh(inputs @ p["w"] + p["b"])
    loss = lambda p: jnp.mean((apply_fn(p, x) - y) ** 2)
    lrs = [0.05] * 4 + [0.01] * 4 + [0.2] * 4 + [0.0] * 2

    traces = 0

    @jax.jit
    def train_step(state):
        nonlocal traces
        traces += 1
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    tx = inject(optkit.adamw)(learning_rate=0.05, weight_decay=0.1)
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=tx)
    # TrainState.create starts `step` as a Python int, which jit's fast path caches apart from
    # the array `step` of the states it returns (flax's doing, not optkit's): start from an array.
    state = state.replace(step=jnp.asarray(state.step))
    for lr in lrs:
        state = state.replace(opt_state=optkit.set_hyperparams(state.opt_state, learning_rate=lr))
        state = train_step(state)
    assert traces == 1
    assert train_step._cache_size() == 1
    assert int(state.step) == len(lrs)

    reference = optkit.adamw(learning_rate=lambda count: jnp.asarray(lrs)[count], weight_decay=0.1)
    expected, ref_state = params, reference.init(params)
    for _ in lrs:
        updates, ref_state = reference.update(jax.grad(loss)(expected), ref_state, expected)
        expected = optkit.apply_updates(expected, updates)
    for name in params:
        np.testing.assert_allclose(state.params[name], expected[name], rtol=1e-12, atol=1e-14)
    assert not math.isclose(float(state.params["b"]), 0.0)
