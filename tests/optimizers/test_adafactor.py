"""Adafactor beyond the generic suites: torch's state (shapes and values), eps1's default from
each leaf's dtype, each parity variant's hyperparameter biting, torch's lerp rule for weights of
0.5 and more, clear errors, and the refusal to run inside ``optkit.flatten``.

Expected values come from ``torch.optim.Adafactor`` (tests marked ``torch``) or from mathematics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import _numerics
from tests.combinators import test_hyperparams as hyperparams_tests
from tests.parity import problem
from tests.support.optimizer_info import to_torch_kwargs
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

NumpyTree = dict[str, np.ndarray]
GradientsOf = Callable[[NumpyTree], NumpyTree]


def run_optkit(
    tx: optkit.GradientTransformation, params: NumpyTree, gradients: GradientsOf, steps: int
) -> tuple[NumpyTree, Any]:
    """Final params (numpy) and state after ``steps`` eager updates."""
    current = {name: jnp.asarray(value) for name, value in params.items()}
    state = tx.init(current)
    for _ in range(steps):
        grads = {k: jnp.asarray(g) for k, g in gradients(_numpy(current)).items()}
        updates, state = tx.update(grads, state, current)
        current = optkit.apply_updates(current, updates)
    return _numpy(current), state


def run_torch(
    params: NumpyTree,
    gradients: GradientsOf,
    steps: int,
    groups: list[tuple[list[str], dict[str, Any]]] | None = None,
    **kwargs: Any,
) -> tuple[NumpyTree, Any, dict[str, Any]]:
    """Final params, the optimizer and the tensors of ``torch.optim.Adafactor``."""
    torch = require_torch()
    tensors = {name: torch.tensor(value) for name, value in params.items()}
    spec: Any = list(tensors.values())
    if groups is not None:
        spec = [{"params": [tensors[n] for n in names], **over} for names, over in groups]
    optimizer = torch.optim.Adafactor(spec, **to_torch_kwargs(kwargs))
    for _ in range(steps):
        grads = gradients({name: t.numpy().copy() for name, t in tensors.items()})
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        optimizer.step()
    return {name: t.numpy().copy() for name, t in tensors.items()}, optimizer, tensors


def _numpy(tree: dict[str, Any]) -> NumpyTree:
    return {name: np.asarray(value) for name, value in tree.items()}


def standard_gradients(params: NumpyTree) -> NumpyTree:
    """The parity problem's gradients (leaves of ranks 0 to 3), computed by torch."""
    return problem.torch_loss_and_grads(params)[1]


# --- torch's state --------------------------------------------------------------------------


@pytest.mark.torch
def test_state_has_torch_shapes_and_values():
    kwargs = {"learning_rate": 0.05, "weight_decay": 0.1, "eps": (1e-3, 1e-2), "maximize": True}
    start = problem.initial_params(np.float64)
    ours, state = run_optkit(optkit.adafactor(**kwargs), start, standard_gradients, steps=12)
    theirs, optimizer, tensors = run_torch(start, standard_gradients, steps=12, **kwargs)

    (inner,) = [s for s in state if isinstance(s, optkit.ScaleByAdafactorState)]
    assert int(inner.count) == 12
    for name, tensor in tensors.items():
        torch_state = optimizer.state[tensor]
        assert float(torch_state["step"]) == 12.0
        factored = tensor.ndim >= 2
        assert set(torch_state) == (
            {"step", "row_var", "col_var"} if factored else {"step", "variance"}
        )
        for field in ("row_var", "col_var", "variance"):
            value = getattr(inner, field)[name]
            if field not in torch_state:
                assert value is None, (name, field)
                continue
            expected = torch_state[field].numpy()
            assert value.shape == expected.shape, (name, field)  # leading axes kept
            np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=f"{name}.{field}")
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10, atol=1e-12)
    # Ranks 0 to 3: both kinds of state, and factoring over the last two axes of a 3-D leaf.
    assert inner.row_var["tensor"].shape == (2, 3, 1)
    assert inner.col_var["tensor"].shape == (2, 1, 4)
    assert inner.variance["scalar"].shape == ()


# --- eps1=None is the machine epsilon of each leaf's dtype ----------------------------------

TINY = 1e-10  # far below float32's machine epsilon, far above float64's


def tiny_gradients(params: NumpyTree) -> NumpyTree:
    return {name: np.full_like(value, TINY) for name, value in params.items()}


def ones(dtype: Any) -> NumpyTree:
    return {"w": np.ones((3, 4), dtype), "b": np.ones(4, dtype)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_eps1_first_step_from_the_dtype(dtype):
    # Step 1 sets V = g^2 (weight 1) and U = g / max(|g|, eps1): sign(g) when the machine epsilon
    # is below |g|, g / eps1 when above. RMS(params) = 1 and rho_1 = lr, so the update is -lr U.
    learning_rate = 0.1
    tx = optkit.adafactor(learning_rate=learning_rate)
    params = ones(dtype)
    updates, _ = tx.update(tiny_gradients(params), tx.init(params), params)

    eps1 = float(np.finfo(dtype).eps)
    expected = -learning_rate * TINY / max(TINY, eps1)
    for name, value in updates.items():
        assert value.dtype == dtype
        np.testing.assert_allclose(value, np.full(params[name].shape, expected), rtol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_eps1_matches_torch(dtype):
    ours, _ = run_optkit(optkit.adafactor(0.1), ones(dtype), tiny_gradients, steps=5)
    theirs, _, _ = run_torch(ones(dtype), tiny_gradients, steps=5, learning_rate=0.1)
    for name in ours:
        np.testing.assert_allclose(
            ours[name], theirs[name], rtol=1e-6 if dtype == np.float32 else 1e-12
        )


@pytest.mark.torch
def test_mixed_dtypes_each_leaf_takes_its_own_epsilon():
    """optkit resolves eps1=None per leaf; torch per param group, from the first parameter it
    updates. With one group per dtype torch agrees; one mixed group gives the float64 leaf
    float32's epsilon (the documented difference)."""
    params = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float64)}
    ours, _ = run_optkit(optkit.adafactor(0.1), params, tiny_gradients, steps=3)
    per_dtype, _, _ = run_torch(
        params, tiny_gradients, steps=3, groups=[(["a"], {}), (["b"], {})], learning_rate=0.1
    )
    one_group, _, _ = run_torch(params, tiny_gradients, steps=3, learning_rate=0.1)

    np.testing.assert_allclose(ours["a"], per_dtype["a"], rtol=1e-6)
    np.testing.assert_allclose(ours["b"], per_dtype["b"], rtol=1e-12)
    np.testing.assert_allclose(one_group["a"], per_dtype["a"], rtol=1e-6)
    assert not np.allclose(one_group["b"], per_dtype["b"], rtol=1e-3)


# --- every parity variant's hyperparameter changes torch's trajectory -------------------------

# Each variant against the same set-up with its hyperparameter at the value that switches it
# off (clipping: d = inf; eps: the default). A variant that agreed with its reference would test
# nothing about that hyperparameter.
REFERENCES = {
    "plain": {"d": math.inf},  # clipping at the default d = 1
    "beta2_decay": {"beta2_decay": -0.8},
    "eps1": {"eps": (None, 1e-3)},
    "eps2": {"eps": (None, 1e-3)},
    "weight_decay": {"weight_decay": 0.0},
    "maximize": {"d": math.inf},  # clipping at d = 1 while the gradients grow
    "clipping_maximize": {"d": math.inf},
    "combined": {"d": math.inf, "eps": (None, 1e-3)},
}


def test_references_cover_every_variant():
    assert REFERENCES.keys() == BY_NAME["adafactor"].variants.keys()


@pytest.mark.torch
@pytest.mark.parametrize("variant", list(REFERENCES))
def test_variant_hyperparameter_bites_in_torch(variant):
    kwargs = BY_NAME["adafactor"].variants[variant]
    start = problem.initial_params(np.float64)
    steps = 30
    with_it, _, _ = run_torch(start, standard_gradients, steps, **kwargs)
    without, _, _ = run_torch(start, standard_gradients, steps, **kwargs | REFERENCES[variant])
    change = max(float(np.max(np.abs(with_it[k] - without[k]))) for k in start)
    assert change > 1e-4, f"{variant}: {change}"


# --- torch's lerp rule --------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("weight", [0.1, 0.4999, 0.5, 2.0**-0.8, 0.9, 1.0])
def test_lerp_matches_torch_on_both_sides_of_one_half(weight):
    torch = require_torch()
    rng = np.random.default_rng(0)
    start, end = (rng.normal(size=64).astype(np.float32) for _ in range(2))
    # As in a jitted step: the weight is a float32 array (torch casts its double to float32).
    lerp = jax.jit(_numerics.lerp)
    ours = np.asarray(lerp(jnp.asarray(start), jnp.asarray(end), jnp.float32(weight)))
    theirs = torch.tensor(start).lerp_(torch.tensor(end), weight).numpy()
    # The same formula on each side of 0.5; where both contract it into one fused multiply-add
    # (XLA:CPU under jit, torch's vectorized kernel) the results are bitwise equal.
    scale = np.maximum(np.abs(start), np.abs(end))
    np.testing.assert_array_less(np.abs(ours - theirs), 2 * np.finfo(np.float32).eps * scale)
    if weight == 1.0:  # the first step's moving average is the new value, exactly
        np.testing.assert_array_equal(ours, end)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-3, (1e-3,), (None, 1e-3, 1.0), "eps"])
def test_eps_must_be_a_pair(eps):
    with pytest.raises(TypeError, match=r"eps must be a tuple \(eps1, eps2\)"):
        optkit.adafactor(eps=eps)


@pytest.mark.parametrize(
    ("eps", "message"),
    [((-1e-3, 1e-3), r"eps1 must be in \[0.0, inf\]"), ((None, -1.0), r"eps2 must be in")],
)
def test_eps_entries_are_range_checked_by_name(eps, message):
    with pytest.raises(ValueError, match=message):
        optkit.adafactor(eps=eps)


def test_update_names_the_leaf_whose_shape_differs_from_the_state():
    tx = optkit.adafactor()
    state = tx.init({"w": jnp.ones((3, 4)), "b": jnp.ones(4)})
    grads = {"w": jnp.ones((4, 3)), "b": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"leaf 'w' has shape \(4, 3\) in updates but \(3, 4\)"):
        tx.update(grads, state, grads)


def test_update_inside_flatten_fails_even_with_a_state_made_outside():
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    inner = optkit.adafactor()
    flat_state = optkit.FlattenState(inner_state=inner.init({"float32": jnp.ones(16)}))
    with pytest.raises(ValueError, match=r"scale_by_adafactor cannot run inside optkit\.flatten"):
        optkit.flatten(inner).update(params, flat_state, params)


def test_relative_step_size_with_zero_learning_rate_is_a_zero_step():
    # 1 / (0 * sqrt(t)) is inf: the cap is 1, and scale_by_learning_rate's -0 zeroes the step.
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    tx = optkit.adafactor(learning_rate=0.0, weight_decay=0.5)
    updates, _ = tx.update(params, tx.init(params), params)
    for value in jax.tree.leaves(updates):
        assert np.all(np.asarray(value) == 0.0)


@pytest.mark.torch
def test_every_runtime_change_bites_in_torch():
    """The runtime-hyperparameter parity (tests/combinators/test_hyperparams.py) only checks
    set_hyperparams if each change alters torch's trajectory."""
    require_torch()
    info = BY_NAME["adafactor"]
    case = hyperparams_tests.runtime_case(info)
    changed = hyperparams_tests.run_torch(case.torch_optimizer, case.kwargs, case.changes)
    for step, _, values in case.changes:
        for name in values:
            fewer = [
                (s, g, {k: v for k, v in vs.items() if (s, k) != (step, name)})
                for s, g, vs in case.changes
            ]
            other = hyperparams_tests.run_torch(case.torch_optimizer, case.kwargs, fewer)
            change = max(float(np.max(np.abs(changed[k] - other[k]))) for k in changed)
            assert change > 1e-4, f"{name} at step {step}: {change}"
