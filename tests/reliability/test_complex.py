"""Complex parameters: every optimizer follows torch.optim on complex64 and complex128 params.

torch optimizes a complex param as its real and imaginary parts (``view_as_real``), or refuses
it (Adafactor, SparseAdam, Muon). The runs and cases live in ``complex_runs.py``: every variant
and the param-groups split of every row whose torch class takes complex params, 20 steps, on the
per-leaf path in complex128; each row's first variant and param-groups split also in complex64
and through ``optkit.flatten`` (complex128). Trajectories are compared with torch live and with
the golden files of ``generate_complex_golden.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.parity.runner import compare
from tests.reliability import complex_runs
from tests.reliability.complex_runs import (
    CASES,
    DTYPES,
    PROBLEMS,
    REFUSING_ROWS,
    STEPS,
    as_real,
    run_optkit,
    run_torch,
    torch_spec,
)
from tests.reliability.generate_complex_golden import load_golden
from tests.reliability.table import Refused, check_refused, params_of
from tests.support.torch_oracle import require_torch

REGENERATE = "regenerate with `python -m tests.reliability.generate_complex_golden`"
TOLERANCES = {"complex64": (1e-5, 1e-6), "complex128": (1e-10, 1e-12)}

_FIRST_CASES = {}
for _case in CASES:
    _FIRST_CASES.setdefault(_case.family, _case.id)
FLATTENED = sorted(
    {*_FIRST_CASES.values(), *(c.id for c in CASES if c.id.endswith("-param_groups"))}
)
# complex128 runs every case, so every flag meets complex numbers at 1e-10; complex64 (the same
# code at float32 rounding) and the flatten path run each row's first variant and its param-groups
# split, which keeps the suite to one compile per run it needs.
COMPLEX64 = set(FLATTENED)
RUNS = [
    *[(case.id, "complex128", "per-leaf") for case in CASES],
    *[(case_id, "complex64", "per-leaf") for case_id in FLATTENED],
    *[(case_id, "complex128", "flatten") for case_id in FLATTENED],
]
by_run = pytest.mark.parametrize(
    ("case_id", "dtype_name", "path"),
    [pytest.param(*run, id="-".join(run)) for run in RUNS],
)
_golden_cache: dict[str, tuple] = {}


def golden(dtype_name: str) -> tuple:
    if dtype_name not in _golden_cache:
        _golden_cache[dtype_name] = load_golden(dtype_name)
    return _golden_cache[dtype_name]


# complex64 L-BFGS with the strong-Wolfe line search is compared over its first 3 steps only:
# from step 4 to 7 float32 rounding in the line search's tests picks other trial steps than
# torch's (complex128 follows torch to 1e-10 over all 20 steps, and so does every other case).
SHORT = {
    ("complex64", case.id): 3
    for case in CASES
    if case.torch_kwargs.get("line_search_fn") == "strong_wolfe"
}


def mismatch(actual: dict, expected: dict, dtype_name: str, case_id: str):
    rtol, atol = TOLERANCES[dtype_name]
    steps = SHORT.get((dtype_name, case_id), STEPS) + 1
    actual, expected = ({k: v[:steps] for k, v in t.items()} for t in (actual, expected))
    return compare(as_real(actual), as_real(expected), rtol=rtol, atol=atol)


@by_run
def test_matches_torch_golden(case_id: str, dtype_name: str, path: str) -> None:
    expected = golden(dtype_name)[2].get(case_id)
    assert expected is not None, f"no golden trajectory for {case_id}; {REGENERATE}"
    found = mismatch(run_optkit(case_id, dtype_name, path), expected, dtype_name, case_id)
    assert found is None, f"{case_id} [{dtype_name}, {path}]: {found}"


@pytest.mark.torch
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_matches_torch_live(dtype_name: str) -> None:
    """optkit's per-leaf runs against torch run now, and the golden file against the same."""
    require_torch()
    version, _, trajectories = golden(dtype_name)
    failures = []
    for case in CASES:
        if dtype_name == "complex64" and case.id not in COMPLEX64:
            continue
        expected = run_torch(case, dtype_name)
        found = mismatch(run_optkit(case.id, dtype_name, "per-leaf"), expected, dtype_name, case.id)
        if found is not None:
            failures.append(f"{case.id}: {found}")
        stale = mismatch(trajectories[case.id], expected, dtype_name, case.id)
        if stale is not None:
            failures.append(f"{case.id}: golden (torch {version}) is stale: {stale}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_golden_files_cover_the_cases(dtype_name: str) -> None:
    version, specs, trajectories = golden(dtype_name)
    assert version, "golden file does not record the torch version"
    assert specs == {case.id: torch_spec(case) for case in CASES}, REGENERATE
    for case in CASES:
        shapes = {k: v.shape for k, v in trajectories[case.id].items()}
        leaf_shapes = PROBLEMS[case.problem].leaf_shapes
        assert shapes == {k: (STEPS + 1, *s) for k, s in leaf_shapes.items()}, case.id
        start = PROBLEMS[case.problem].initial_params(DTYPES[dtype_name])
        for leaf, values in trajectories[case.id].items():
            np.testing.assert_array_equal(values[0], start[leaf], err_msg=REGENERATE)


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_both_parts_of_every_leaf_move(case_id: str) -> None:
    """Agreeing with torch says something: the real and imaginary parts all travel."""
    for leaf, values in golden("complex128")[2][case_id].items():
        travel = values - values[0]
        assert np.abs(travel.real).max() > 0.01, f"{case_id}: {leaf}, real part"
        assert np.abs(travel.imag).max() > 0.01, f"{case_id}: {leaf}, imaginary part"


@pytest.mark.torch
def test_problem_gradients_follow_torchs_convention() -> None:
    """The runs feed optkit ``conj(jax.grad)``: that is torch's gradient, so the problems agree."""
    require_torch()
    for task in PROBLEMS.values():
        params = task.initial_params(np.complex128)
        _, grads = task.jax_value_and_grad({k: jnp.asarray(v) for k, v in params.items()})
        expected = task.torch_grads(params)
        for leaf, grad in grads.items():
            np.testing.assert_allclose(np.conj(np.asarray(grad)), expected[leaf], rtol=1e-12)


# --- the example and the clipping primitives ---------------------------------------------

P0 = np.array([1 + 2j], np.complex64)
G0 = np.array([0.3 - 0.2j], np.complex64)


def test_adam_moves_each_part_by_the_learning_rate() -> None:
    """Adam's first step is ``-lr * sign`` per part: ``[1+2j]`` with gradient ``[0.3-0.2j]``
    moves by ``-0.1+0.1j`` (optkit gave ``-0.1+0j`` when it squared ``g * g``)."""
    tx = optkit.adam(0.1)
    updates, _ = tx.update(jnp.asarray(G0), tx.init(jnp.asarray(P0)), jnp.asarray(P0))
    assert updates.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(updates), [-0.1 + 0.1j], rtol=1e-6)


@pytest.mark.torch
def test_adam_example_matches_torch() -> None:
    torch = require_torch()
    p = torch.tensor(P0, requires_grad=True)
    p.grad = torch.tensor(G0)
    torch.optim.Adam([p], lr=0.1).step()
    tx = optkit.adam(0.1)
    updates, _ = tx.update(jnp.asarray(G0), tx.init(jnp.asarray(P0)), jnp.asarray(P0))
    np.testing.assert_allclose(P0 + np.asarray(updates), p.detach().numpy(), rtol=1e-6)


def test_global_norm_measures_the_modulus() -> None:
    grads = {"a": jnp.array([3 + 4j]), "b": jnp.array([0j, 12.0 + 0j])}
    assert float(optkit.global_norm(grads)) == pytest.approx(13.0)
    tx = optkit.clip_by_global_norm(1.3)
    clipped = tx.update(grads, tx.init(None))[0]
    # Scaled by one real coefficient: the direction of each entry is kept.
    np.testing.assert_allclose(np.asarray(clipped["a"]), [0.3 + 0.4j], rtol=1e-6)


@pytest.mark.torch
def test_clip_by_global_norm_matches_torch() -> None:
    torch = require_torch()
    grads = {"a": np.array([3 + 4j, -1 + 0.5j], np.complex128), "b": np.array(2 - 7j)}
    tensors = [torch.zeros_like(torch.tensor(g), requires_grad=True) for g in grads.values()]
    for tensor, g in zip(tensors, grads.values(), strict=True):
        tensor.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, 2.0)
    tx = optkit.clip_by_global_norm(2.0)
    clipped = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(None))[0]
    for tensor, leaf in zip(tensors, clipped.values(), strict=True):
        np.testing.assert_allclose(np.asarray(leaf), tensor.grad.numpy(), rtol=1e-12)


# --- refusals: where torch refuses complex params, optkit names the leaf --------------------------


def _init_complex(info):
    task = PROBLEMS["standard"]
    leaf_shapes = dict(task.leaf_shapes)
    if info.problem == "matrices":  # Muon: matrices only
        leaf_shapes = {"matrix": (3, 4), "square": (4, 4)}
    params = {k: jnp.zeros(s, jnp.complex64) for k, s in leaf_shapes.items()}
    return lambda: info.make(learning_rate=0.01).init(params)


def _clip_complex():
    tx = optkit.clip(0.5)
    return tx.update({"w": jnp.asarray(G0)}, tx.init(None))


REFUSED = [
    *[
        Refused(f"{info.name}-complex-params", _init_complex(info), ValueError, ("complex64",))
        for info in REFUSING_ROWS
    ],
    Refused("clip-complex-updates", _clip_complex, ValueError, ("'w'", "complex")),
    Refused(
        "apply_updates-complex-on-real",
        lambda: optkit.apply_updates({"w": jnp.ones(1)}, {"w": jnp.asarray(G0)}),
        ValueError,
        ("'w'", "imaginary"),
    ),
    Refused(
        "sgd-complex-gradient-on-real-param",
        lambda: optkit.sgd(0.1).update(
            {"w": jnp.asarray(G0)}, optkit.sgd(0.1).init({"w": jnp.ones(1)}), {"w": jnp.ones(1)}
        ),
        ValueError,
        ("'w'", "complex64", "imaginary"),
    ),
]


@pytest.mark.parametrize("row", params_of(REFUSED))
def test_refused(row: Refused) -> None:
    check_refused(row)


@pytest.mark.parametrize("info", REFUSING_ROWS, ids=lambda info: info.name)
def test_refusing_rows_name_the_leaf(info) -> None:
    with pytest.raises(ValueError, match=r"params leaf '(matrix|scalar|square)' is complex64"):
        _init_complex(info)()


@pytest.mark.torch
@pytest.mark.parametrize("info", REFUSING_ROWS, ids=lambda info: info.name)
def test_torch_refuses_the_same_rows(info) -> None:
    torch = require_torch()
    p = torch.zeros((3, 4), dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(
        (RuntimeError, ValueError), match=complex_runs.TORCH_REFUSES[info.torch_class]
    ):
        getattr(torch.optim, info.torch_class)([p], lr=0.01).step()
    with pytest.raises(RuntimeError, match="complex"):
        torch.nn.utils.clip_grad_value_([p], 0.5)
