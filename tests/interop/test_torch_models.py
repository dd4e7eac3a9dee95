"""Checkpoints of real set-ups cross both ways: a Flax linen model against the same torch
``nn.Linear`` model (transposed layouts, Adafactor's factored statistics included), two param
groups (one that keeps no state; injected hyperparameters changed mid-run), a schedule against
torch's scheduler, and a file written by ``torch.save``. float64, 7 steps each side of the
checkpoint, trajectories equal to 1e-10.
"""

from __future__ import annotations

import copy
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import schedules
from tests.interop import runs
from tests.parity import problem
from tests.support.optimizer_info import to_torch_kwargs
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

STEPS = runs.STEPS

# --- a Flax linen MLP and the same torch model --------------------------------------------------

IN, HIDDEN, OUT, EXAMPLES = 5, 7, 3, 16
KERNELS = ["params/Dense_0/kernel", "params/Dense_1/kernel"]
PATHS = [
    "params/Dense_0/kernel",
    "params/Dense_0/bias",
    "params/Dense_1/kernel",
    "params/Dense_1/bias",
]
"""optkit's leaves in the order of torch's ``model.parameters()``: weight, bias, weight, bias."""
LAYOUTS = dict.fromkeys(KERNELS, "transpose")  # Linear's weight is (out, in), Dense's (in, out)
X = np.random.default_rng(0).normal(size=(EXAMPLES, IN))
Y = np.random.default_rng(1).normal(size=(EXAMPLES, OUT))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.Dense(HIDDEN, dtype=jnp.float64, param_dtype=jnp.float64)(x)
        return nn.Dense(OUT, dtype=jnp.float64, param_dtype=jnp.float64)(jnp.tanh(hidden))


def flax_loss(params):
    return jnp.mean((MLP().apply(params, X) - Y) ** 2)


def torch_model(flat: dict[str, np.ndarray]):
    """torch's MLP holding ``flat`` (optkit's leaves by path, kernels transposed)."""
    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT)
    ).double()
    with torch.no_grad():
        for parameter, path in zip(model.parameters(), PATHS, strict=True):
            parameter.copy_(torch.from_numpy(np.asarray(flat[path]).T.copy()))
    return model


def torch_flat(model) -> dict[str, np.ndarray]:
    return {
        path: p.detach().numpy().T.copy() for path, p in zip(PATHS, model.parameters(), strict=True)
    }


def torch_model_steps(model, optimizer, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
    import torch

    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        torch.mean((model(x) - y) ** 2).backward()
        optimizer.step()
        trajectory.append(torch_flat(model))
    return trajectory


def flat(params) -> dict[str, np.ndarray]:
    return {path: np.asarray(leaf) for path, leaf in optkit._tree.leaves_with_paths(params)}


def unflat(values: dict[str, np.ndarray], like):
    leaves = [jnp.asarray(values[path]) for path, _ in optkit._tree.leaves_with_paths(like)]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def optkit_steps(step, params, state, steps: int = STEPS):
    trajectory = []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(flat(params))
    return trajectory, params, state


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_flax_linen_model_crosses_both_ways(name):
    torch = require_torch()
    info = BY_NAME[name]
    tx = info.factory(**info.typical)
    step = runs.make_step(tx, flax_loss)
    init = MLP().init(jax.random.key(0), jnp.zeros((1, IN), jnp.float64))

    # torch -> optkit
    model = torch_model(flat(init))
    optimizer = getattr(torch.optim, info.torch_class)(
        model.parameters(), **to_torch_kwargs(info.typical)
    )
    *_, at_checkpoint = torch_model_steps(model, optimizer)
    saved = copy.deepcopy(optimizer.state_dict())
    expected = torch_model_steps(model, optimizer)
    params = unflat(at_checkpoint, init)
    state = optkit.from_torch_state_dict(tx, params, saved, PATHS, layouts=LAYOUTS)
    runs.assert_same_path(optkit_steps(step, params, state)[0], expected)

    # optkit -> torch
    _, params, state = optkit_steps(step, init, tx.init(init))
    exported = optkit.to_torch_state_dict(tx, state, params, PATHS, layouts=LAYOUTS)
    model = torch_model(flat(params))
    optimizer = getattr(torch.optim, info.torch_class)(
        model.parameters(), **to_torch_kwargs(info.typical)
    )
    optimizer.load_state_dict(exported)
    runs.assert_same_path(optkit_steps(step, params, state)[0], torch_model_steps(model, optimizer))


# --- two param groups ---------------------------------------------------------------------------

LEAVES = list(problem.STANDARD.leaf_shapes)  # scalar, vector, matrix, tensor
FIRST, SECOND = LEAVES[:2], LEAVES[2:]


GROUP_CASES = {
    # SGD: the first group has no momentum, so torch keeps no state for its parameters.
    "sgd": dict(
        torch_class="SGD",
        groups=[(FIRST, {"momentum": 0.0}), (SECOND, {"lr": 0.05, "nesterov": True})],
        defaults={"lr": 0.1, "momentum": 0.9},
        optimizer=optkit.sgd,
        optkit_groups=[{"momentum": 0.0}, {"learning_rate": 0.05, "nesterov": True}],
        optkit_defaults={"learning_rate": 0.1, "momentum": 0.9},
        changes=(),
    ),
    # Adam with injected hyperparameters, whose learning rates change after 4 steps.
    "adam_injected": dict(
        torch_class="Adam",
        groups=[(FIRST, {}), (SECOND, {"lr": 0.005, "betas": (0.8, 0.99)})],
        defaults={"lr": 0.01, "betas": (0.9, 0.99), "amsgrad": True},
        optimizer=optkit.inject_hyperparams(optkit.adam),
        optkit_groups=[{}, {"learning_rate": 0.005, "b1": 0.8}],
        optkit_defaults={"learning_rate": 0.01, "b2": 0.99, "amsgrad": True},
        changes=((0, 0.003), (1, 0.02)),
    ),
}
CHANGE_AT = 4


def _torch_in_groups(case, values):
    """torch's optimizer of the case over ``values`` (the standard problem's leaves)."""
    import torch

    params = runs.torch_params(values, LEAVES)
    spec = [{"params": [params[n] for n in names], **over} for names, over in case["groups"]]
    return params, getattr(torch.optim, case["torch_class"])(spec, **case["defaults"])


@pytest.mark.parametrize("case", GROUP_CASES.values(), ids=GROUP_CASES)
def test_two_param_groups_cross_both_ways(case):
    require_torch()
    start = problem.STANDARD.initial_params(np.float64)
    params, optimizer = _torch_in_groups(case, start)
    runs.torch_steps(optimizer, params, steps=CHANGE_AT)
    for group, lr in case["changes"]:
        optimizer.param_groups[group]["lr"] = lr
    *_, at_checkpoint = runs.torch_steps(optimizer, params, steps=STEPS - CHANGE_AT)
    saved = copy.deepcopy(optimizer.state_dict())
    expected = runs.torch_steps(optimizer, params)
    groups = [
        {"params": names, **over}
        for (names, _), over in zip(case["groups"], case["optkit_groups"], strict=True)
    ]
    tx = optkit.param_groups(case["optimizer"], groups, **case["optkit_defaults"])
    step = runs.make_step(tx, problem.STANDARD.jax_loss)

    # torch -> optkit: injected learning rates come from the state_dict.
    params = runs.as_jax(at_checkpoint)
    state = optkit.from_torch_state_dict(tx, params, saved, LEAVES)
    runs.assert_same_path(runs.continue_optkit(step, params, state)[0], expected)

    # optkit -> torch, with the same changes through set_hyperparams.
    params = runs.as_jax(start)
    _, params, state = runs.continue_optkit(step, params, tx.init(params), CHANGE_AT)
    for group, lr in case["changes"]:
        state = optkit.set_hyperparams(state, group=group, learning_rate=lr)
    _, params, state = runs.continue_optkit(step, params, state, STEPS - CHANGE_AT)
    exported = optkit.to_torch_state_dict(tx, state, params, LEAVES)
    assert exported["param_groups"] == saved["param_groups"]
    resumed, optimizer = _torch_in_groups(case, params)  # built with the first learning rates
    optimizer.load_state_dict(exported)
    expected = runs.torch_steps(optimizer, resumed)
    runs.assert_same_path(runs.continue_optkit(step, params, state)[0], expected)


# --- a schedule, and the step count torch's SGD does not keep -----------------------------------


def test_schedule_and_step_count_cross_both_ways():
    torch = require_torch()
    lr, gamma = 0.1, 0.8
    tx = optkit.sgd(schedules.exponential_lr(lr, gamma), momentum=0.9)
    step = runs.make_step(tx, problem.STANDARD.jax_loss)
    start = problem.STANDARD.initial_params(np.float64)

    def torch_run(values):
        params = runs.torch_params(values, LEAVES)
        optimizer = torch.optim.SGD(list(params.values()), lr=lr, momentum=0.9)
        return params, optimizer

    def steps(params, optimizer, scheduler):
        trajectory = []
        for _ in range(STEPS):
            trajectory += runs.torch_steps(optimizer, params, steps=1)
            scheduler.step()
        return trajectory

    params, optimizer = torch_run(start)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    *_, at_checkpoint = steps(params, optimizer, scheduler)
    saved = copy.deepcopy(optimizer.state_dict())
    expected = steps(params, optimizer, scheduler)

    params = runs.as_jax(at_checkpoint)
    with pytest.raises(ValueError, match="pass step="):
        optkit.from_torch_state_dict(tx, params, saved, LEAVES)
    state = optkit.from_torch_state_dict(tx, params, saved, LEAVES, step=STEPS)
    runs.assert_same_path(runs.continue_optkit(step, params, state)[0], expected)

    # optkit -> torch: lr is the schedule's next value, initial_lr its first, as torch's.
    params = runs.as_jax(start)
    _, params, state = runs.continue_optkit(step, params, tx.init(params))
    exported = optkit.to_torch_state_dict(tx, state, params, LEAVES)
    (group,), (torch_group,) = exported["param_groups"], saved["param_groups"]
    assert group.keys() == torch_group.keys()
    assert group["initial_lr"] == lr
    np.testing.assert_allclose(group["lr"], torch_group["lr"], rtol=1e-15)
    resumed, optimizer = torch_run(params)
    optimizer.load_state_dict(exported)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)  # starts at the lr loaded
    expected = steps(resumed, optimizer, scheduler)
    runs.assert_same_path(runs.continue_optkit(step, params, state)[0], expected)


# --- files written by torch.save ----------------------------------------------------------------


class NotAnArray:
    """Any object other than tensors and containers, which torch.load(weights_only=True) refuses."""


def test_state_dict_file_is_read_with_weights_only(tmp_path):
    torch = require_torch()
    info = BY_NAME["adam"]
    reference = runs.torch_reference(info.name)
    tx, step = runs.optkit_run(info.name)
    params = runs.as_jax(reference.params)
    torch.save(reference.state_dict, tmp_path / "optimizer.pt")

    for path in (tmp_path / "optimizer.pt", str(tmp_path / "optimizer.pt")):
        state = optkit.from_torch_state_dict(tx, params, path, runs.paths(info))
        runs.assert_same_path(runs.continue_optkit(step, params, state)[0], reference.continued)

    torch.save({**reference.state_dict, "extra": NotAnArray()}, tmp_path / "pickled.pt")
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        optkit.from_torch_state_dict(tx, params, tmp_path / "pickled.pt", runs.paths(info))
