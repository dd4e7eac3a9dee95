"""optkit.lbfgs beyond the generic suites: torch's defaults in float64, the state against torch's
state, the registry variants doing what they are named for, flatten, param groups, errors and
compilation. (The line search: test_lbfgs_line_search.py.)

Expected values come from torch (``torch.optim.LBFGS``) or from the golden trajectories it wrote.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.optimizers.test_parity import TOLERANCES, golden
from tests.parity import problem
from tests.parity.cases import CASES_BY_ID, Case
from tests.parity.runner import compare, run_optkit, run_torch, stack
from tests.support.optimizer_info import to_torch_kwargs
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

LBFGS = BY_NAME["lbfgs"]
TASK = problem.PROBLEMS[LBFGS.problem]


def case_for(name: str, kwargs: dict[str, Any]) -> Case:
    return Case(
        id=f"lbfgs-{name}",
        family="lbfgs",
        make_optkit=lambda dtype, wrap: wrap(optkit.lbfgs(**kwargs)),
        torch_optimizer="LBFGS",
        torch_kwargs=to_torch_kwargs(kwargs),
        problem=LBFGS.problem,
        closure=True,
    )


# Settings whose float32 runs are decided by rounding (see the registry's comment on LBFGS):
# compared in float64 only.
FLOAT64_ONLY = {
    "defaults": {},
    "defaults_strong_wolfe": {"line_search_fn": "strong_wolfe"},
    "small_learning_rate": {"learning_rate": 0.1, "max_iter": 1},
    "learning_rate_history_wraps": {"learning_rate": 0.5, "max_iter": 3, "history_size": 2},
    "one_evaluation_searches": {
        "learning_rate": 0.3,
        "line_search_fn": "strong_wolfe",
        "max_iter": 1,
        "history_size": 3,
    },
}


@pytest.mark.torch
@pytest.mark.parametrize("name", FLOAT64_ONLY)
def test_float64_matches_torch(name: str) -> None:
    require_torch()
    case = case_for(name, FLOAT64_ONLY[name])
    expected = run_torch(case, np.float64)
    mismatch = compare(run_optkit(case, np.float64), expected, **TOLERANCES["float64"]._asdict())
    assert mismatch is None, f"{name}: {mismatch}"
    moved = np.max(np.abs(stack(expected)["matrix"][-1] - stack(expected)["matrix"][0]))
    assert moved > 0.1


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("case_id", ["lbfgs-learning_rate", "lbfgs-strong_wolfe_zooms"])
def test_flatten_matches_torch_golden(case_id: str, dtype_name: str) -> None:
    """Under optkit.flatten the state is torch's flat vector, and value_fn takes flat vectors."""
    case = CASES_BY_ID[case_id]
    ours = run_optkit(case, getattr(np, dtype_name), path="flatten")
    expected = golden("lbfgs", dtype_name).trajectories[case_id]
    mismatch = compare(ours, expected, **TOLERANCES[dtype_name]._asdict())
    assert mismatch is None, f"{case_id} [{dtype_name}, flatten]: {mismatch}"


# --- the state, against torch's ------------------------------------------------------------------


def torch_vector_to_tree(vector: Any) -> dict[str, np.ndarray]:
    """torch's flat vector (params concatenated in the order given) as the problem's leaves."""
    out, offset = {}, 0
    for name, shape in TASK.leaf_shapes.items():
        size = int(np.prod(shape))
        out[name] = vector.detach().numpy()[offset : offset + size].reshape(shape)
        offset += size
    return out


def history(state: optkit.ScaleByLbfgsState, buffer: Any) -> list[Any]:
    """The ring buffer's entries, oldest first (torch's list order)."""
    size = len(state.rho)
    slots = [(int(state.history_start) + k) % size for k in range(int(state.history_length))]
    return [jax.tree.map(lambda b, s=slot: np.asarray(b[s]), buffer) for slot in slots]


def assert_tree_close(actual: dict, expected: dict, where: str) -> None:
    for name in expected:
        np.testing.assert_allclose(
            actual[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=where
        )


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["strong_wolfe_zooms", "history_wraps"])
def test_state_matches_torch_state(variant: str) -> None:
    torch = require_torch()
    kwargs = LBFGS.variants[variant]
    leaves = {
        k: torch.tensor(v, requires_grad=True) for k, v in TASK.initial_params(np.float64).items()
    }
    optimizer = torch.optim.LBFGS(list(leaves.values()), **to_torch_kwargs(kwargs))

    def closure():
        optimizer.zero_grad()
        loss = TASK.torch_loss(leaves)
        loss.backward()
        return loss

    tx = optkit.lbfgs(**kwargs)
    params = {k: jnp.asarray(v) for k, v in TASK.initial_params(np.float64).items()}
    state = tx.init(params)
    for _ in range(2):
        optimizer.step(closure)
        loss, grads = TASK.jax_value_and_grad(params)
        updates, state = tx.update(grads, state, params, value=loss, value_fn=TASK.jax_loss)
        params = optkit.apply_updates(params, updates)
    expected = optimizer.state[optimizer.param_groups[0]["params"][0]]

    assert int(state.n_iter) == expected["n_iter"]
    assert int(state.func_evals) == expected["func_evals"]
    np.testing.assert_allclose(float(state.step_size), float(expected["t"]), rtol=1e-9)
    np.testing.assert_allclose(float(state.hessian_diag), float(expected["H_diag"]), rtol=1e-9)
    np.testing.assert_allclose(float(state.prev_loss), expected["prev_loss"], rtol=1e-12)
    assert_tree_close(state.direction, torch_vector_to_tree(expected["d"]), "d")
    assert_tree_close(state.prev_grad, torch_vector_to_tree(expected["prev_flat_grad"]), "grad")
    assert int(state.history_length) == len(expected["old_dirs"]) == kwargs.get("history_size")
    pairs = zip(history(state, state.grad_diffs), expected["old_dirs"], strict=True)
    for k, (ours, theirs) in enumerate(pairs):
        assert_tree_close(ours, torch_vector_to_tree(theirs), f"old_dirs[{k}]")
    pairs = zip(history(state, state.param_diffs), expected["old_stps"], strict=True)
    for k, (ours, theirs) in enumerate(pairs):
        assert_tree_close(ours, torch_vector_to_tree(theirs), f"old_stps[{k}]")
    start, size = int(state.history_start), len(state.rho)
    rho = [state.rho[(start + k) % size] for k in range(len(expected["ro"]))]
    np.testing.assert_allclose(rho, [float(r) for r in expected["ro"]], rtol=1e-9)


# --- the registry's variants do what they are named for ------------------------------------------


def torch_run(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """torch's float64 trajectory for ``kwargs``, and what its line searches did."""
    import torch.optim.lbfgs as torch_lbfgs

    seen = {"extrapolations": 0, "zooms": 0, "cut_short": 0}
    interpolate, search = torch_lbfgs._cubic_interpolate, torch_lbfgs._strong_wolfe

    def counting(*args: Any, bounds: Any = None) -> Any:
        seen["zooms" if bounds is None else "extrapolations"] += 1
        return interpolate(*args, bounds=bounds)

    def watched(*args: Any, **options: Any) -> Any:
        found = search(*args, **options)
        seen["cut_short"] += found[3] == options["max_ls"] + 1
        return found

    monkeypatch.setattr(torch_lbfgs, "_cubic_interpolate", counting)
    monkeypatch.setattr(torch_lbfgs, "_strong_wolfe", watched)
    return stack(run_torch(case_for("probe", kwargs), np.float64)), seen


def without(kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key != name}


@pytest.mark.torch
@pytest.mark.parametrize(
    ("variant", "setting"),
    [
        ("learning_rate", "tolerance_grad"),
        ("tolerance_change", "tolerance_change"),
        ("history_wraps", "history_size"),
        ("one_iteration", "max_iter"),
        ("max_eval", "max_eval"),
        ("strong_wolfe_max_eval", "max_eval"),
    ],
)
def test_variant_settings_take_effect_in_torch(variant, setting, monkeypatch) -> None:
    """Each variant's setting changes torch's trajectory: the early exits trigger within the run,
    the history is shorter than the iterations, max_eval stops iterations."""
    require_torch()
    kwargs = LBFGS.variants[variant]
    with_setting, _ = torch_run(kwargs, monkeypatch)
    without_setting, _ = torch_run(without(kwargs, setting), monkeypatch)
    assert compare(with_setting, without_setting, rtol=1e-8, atol=1e-10) is not None


@pytest.mark.torch
@pytest.mark.parametrize(
    ("variant", "behaviour"),
    [
        ("strong_wolfe_extrapolates", "extrapolations"),
        ("strong_wolfe_extrapolates", "cut_short"),
        ("strong_wolfe_zooms", "zooms"),
        ("strong_wolfe_max_eval", "cut_short"),
    ],
)
def test_line_search_variants_search_as_named(variant, behaviour, monkeypatch) -> None:
    require_torch()
    _, seen = torch_run(LBFGS.variants[variant], monkeypatch)
    assert seen[behaviour] > 0, seen


# --- one state over every param: no param groups -------------------------------------------------


PARAMS = {"a": jnp.ones(2), "b": jnp.ones(3)}


def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum((params["a"] - 3.0) ** 2) + jnp.sum((params["b"] + 1.0) ** 2 * params["a"][0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: optkit.param_groups(optkit.lbfgs, [{"params": "a"}, {"params": "b"}]),
        lambda: optkit.masked(optkit.lbfgs(), {"a": True, "b": False}),
        lambda: optkit.partition({"x": optkit.lbfgs(), "y": optkit.sgd(0.1)}, {"a": "x", "b": "y"}),
    ],
    ids=["param_groups", "masked", "partition"],
)
def test_a_subset_of_the_params_is_refused(make) -> None:
    with pytest.raises(ValueError, match="cannot run on a subset of the leaves"):
        make().init(PARAMS)


@pytest.mark.torch
def test_torch_refuses_param_groups_too() -> None:
    torch = require_torch()
    groups = [{"params": [torch.ones(2, requires_grad=True)]}] * 1
    groups.append({"params": [torch.ones(3, requires_grad=True)], "lr": 0.5})
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        torch.optim.LBFGS(groups)


def test_one_group_is_the_plain_optimizer() -> None:
    grouped = optkit.param_groups(optkit.lbfgs, [{"params": "**"}], learning_rate=0.5)
    plain = optkit.lbfgs(learning_rate=0.5)
    grads = jax.grad(loss_fn)(PARAMS)
    ours, _ = grouped.update(grads, grouped.init(PARAMS), PARAMS, value_fn=loss_fn)
    expected, _ = plain.update(grads, plain.init(PARAMS), PARAMS, value_fn=loss_fn)
    jax.tree.map(np.testing.assert_array_equal, ours, expected)


# --- arguments and errors ------------------------------------------------------------------------


def test_update_needs_the_loss_function() -> None:
    tx = optkit.lbfgs()
    with pytest.raises(ValueError, match=r"value_fn=loss_fn"):
        tx.update(jax.grad(loss_fn)(PARAMS), tx.init(PARAMS), PARAMS)


def test_value_is_evaluated_when_not_given() -> None:
    tx = optkit.lbfgs(line_search_fn="strong_wolfe", max_iter=3)
    loss, grads = jax.value_and_grad(loss_fn)(PARAMS)
    state = tx.init(PARAMS)
    given = tx.update(grads, state, PARAMS, value=loss, value_fn=loss_fn)
    evaluated = tx.update(grads, state, PARAMS, value_fn=loss_fn)
    jax.tree.map(np.testing.assert_array_equal, given, evaluated)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_eval": 0}, ValueError, r"^max_eval must be an integer in \[1, inf\]"),
        ({"max_eval": 2.5}, ValueError, r"^max_eval must be an integer"),
        ({"line_search_fn": "backtracking"}, ValueError, r"^line_search_fn must be one of None"),
        ({"max_iter": 0}, ValueError, r"^max_iter must be an integer in \[1, inf\]"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        optkit.lbfgs(**kwargs)


def test_max_eval_defaults_to_torchs() -> None:
    """torch: max_eval = max_iter * 5 // 4; with max_iter=1 that is one evaluation per step."""
    tx = optkit.lbfgs(max_iter=1, line_search_fn="strong_wolfe")
    state = tx.init(PARAMS)
    grads = jax.grad(loss_fn)(PARAMS)
    for _ in range(3):
        _, state = tx.update(grads, state, PARAMS, value_fn=loss_fn)
    # Each update: the given gradient, plus a search cut to its first evaluation.
    assert int(state.func_evals) == 3 * 2


# --- compiles once -------------------------------------------------------------------------------


def test_jitted_update_compiles_once_and_eager_updates_reuse_one_program() -> None:
    tx = optkit.lbfgs(line_search_fn="strong_wolfe", max_iter=4, history_size=2)
    traces = 0

    @jax.jit
    def step(params, state):
        nonlocal traces
        traces += 1
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss, value_fn=loss_fn)
        return optkit.apply_updates(params, updates), state

    params, state = PARAMS, tx.init(PARAMS)
    eager_params, eager_state = PARAMS, tx.init(PARAMS)
    compiled = []
    for _ in range(4):
        params, state = step(params, state)
        loss, grads = jax.value_and_grad(loss_fn)(eager_params)
        updates, eager_state = tx.update(
            grads, eager_state, eager_params, value=float(loss), value_fn=loss_fn
        )
        eager_params = optkit.apply_updates(eager_params, updates)
        compiled.append(optkit.optimizers.lbfgs._run_compiled._cache_size())
    assert traces == 1
    assert compiled[1:] == compiled[:1] * 3, compiled
    for ours, expected in zip(jax.tree.leaves(eager_params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5)
