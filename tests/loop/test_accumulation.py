"""``accumulate_gradients`` reproduces torch's accumulation loop, and sums as torch does.

Parity: one table (tests/loop/accumulation_cases.py) of optimizers (SGD with momentum, AdamW,
RAdam, a StepLR schedule through ``inject_hyperparams``, a cosine schedule, param groups), each
with k = 1, 3 and 4 micro-batches per step, in float32 and float64. torch runs ``(loss /
k).backward()`` on each micro-batch then ``opt.step(); scheduler.step(); opt.zero_grad()``;
optkit gets each micro-batch's plain gradient. The params after every optimizer step match torch
to rtol 1e-10 (float64) and 1e-5 (float32), the tolerances of the optimizer parity suite; the
golden tests compare with torch's values stored in tests/loop/golden/ and run without torch.

Sums: the accumulator is torch's ``p.grad`` after ``p.grad += g * (1 / k)``, term by term, in
each dtype; float16 and bfloat16 params get a float32 accumulator, and ``inner`` receives the
mean in the gradients' dtype.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.loop import accumulation_oracle
from tests.loop.accumulation_cases import (
    BY_ID,
    CASES,
    DTYPES,
    LEAVES,
    initial_params,
    loss,
    micro_batches,
)
from tests.loop.generate_accumulation_golden import Golden, load_golden

DOC = Path(__file__).resolve().parents[2] / "docs" / "gradient_accumulation.md"
TOLERANCES = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}
RUNS = [(case, dtype) for case in CASES for dtype in DTYPES]
RUN_IDS = [f"{case.id}-{dtype}" for case, dtype in RUNS]


@functools.cache
def gradient_fn() -> Any:
    """The plain gradient of one micro-batch's loss, compiled once per dtype for every case."""
    return jax.jit(jax.grad(lambda params, x, y: loss(jnp, params, x, y)))


@functools.cache
def optkit_trajectory(case_id: str, dtype: str) -> dict[str, np.ndarray]:
    """The params after each optimizer step, by leaf (each run once per session, for both the
    golden and the live test); asserts on the way that the micro-steps in between return zero
    updates (the params do not move)."""
    case = BY_ID[case_id]
    tx = case.make()

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    params = {name: jnp.asarray(value) for name, value in initial_params(dtype).items()}
    state = tx.init(params)
    xs, ys = micro_batches(case.steps * case.every_k, dtype)
    path: dict[str, list[np.ndarray]] = {leaf: [] for leaf in LEAVES}
    for i in range(case.steps * case.every_k):
        before = params
        params, state = step(params, state, gradient_fn()(params, xs[i], ys[i]))
        boundary = (i + 1) % case.every_k == 0
        assert bool(optkit.optimizer_stepped(state)) == boundary
        if not boundary:
            for leaf in LEAVES:
                assert np.array_equal(params[leaf], before[leaf]), (case.id, i, leaf)
            continue
        for leaf in LEAVES:
            path[leaf].append(np.asarray(params[leaf]))
    return {leaf: np.stack(values) for leaf, values in path.items()}


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


def test_golden_file_matches_the_case_table(golden):
    assert sorted(golden.specs) == sorted(case.id for case in CASES), "regenerate the goldens"
    stale = [case.id for case in CASES if golden.specs[case.id] != case.torch_spec()]
    assert not stale, (
        f"stale goldens for {stale}: python -m tests.loop.generate_accumulation_golden"
    )


@pytest.mark.parametrize(("case", "dtype"), RUNS, ids=RUN_IDS)
def test_matches_torch_golden(case, dtype, golden):
    trajectory = optkit_trajectory(case.id, dtype)
    for leaf in LEAVES:
        expected = golden.params[f"{case.id}:{dtype}:{leaf}"]
        assert trajectory[leaf].dtype == expected.dtype == np.dtype(dtype)
        np.testing.assert_allclose(trajectory[leaf], expected, **TOLERANCES[dtype], err_msg=leaf)


@pytest.mark.torch
@pytest.mark.parametrize(("case", "dtype"), RUNS, ids=RUN_IDS)
def test_matches_live_torch(case, dtype):
    expected = accumulation_oracle.torch_trajectory(case, dtype)
    trajectory = optkit_trajectory(case.id, dtype)
    for leaf in LEAVES:
        np.testing.assert_allclose(trajectory[leaf], expected[leaf], **TOLERANCES[dtype])


# --- the sums: torch's p.grad += g * (1 / k), in each dtype ------------------------------------

SUM_DTYPES = ("float64", "float32", "bfloat16", "float16")
SUM_SHAPE = (257,)


def recorder() -> optkit.GradientTransformation:
    """An inner optimizer that returns its gradients as updates and keeps them in its state, so
    the test sees what ``inner`` received (value and dtype)."""
    return optkit.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda updates, state, params=None, **extra: (updates, updates),
    )


def micro_gradients(count: int, dtype: str) -> np.ndarray:
    """``count`` gradients of mixed magnitudes, rounded to ``dtype`` (as float64 arrays)."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=(count, *SUM_SHAPE)) * 10.0 ** rng.uniform(-3, 2, size=SUM_SHAPE)
    return np.asarray(jnp.asarray(values, dtype).astype(jnp.float64))


def expected_sums(gradients: np.ndarray, every_k: int, dtype: str) -> list[np.ndarray]:
    """torch's ``p.grad`` after each ``p.grad += g * (1 / k)`` in ``dtype`` (the first term
    assigned), by torch's rules: half-precision tensors compute in float32 ("opmath") and round
    each result once; the Python scalar 1 / k becomes that compute dtype."""
    compute = np.float64 if dtype == "float64" else np.float32
    total, sums = None, []
    for gradient in gradients:
        term = np.asarray(jnp.asarray(gradient.astype(compute) * compute(1 / every_k), dtype))
        total = (
            term
            if total is None
            else np.asarray(jnp.asarray(total.astype(compute) + term.astype(compute), dtype))
        )
        sums.append(total.astype(np.float64))
    return sums


@functools.cache
def optkit_sums(dtype: str, every_k: int, accumulator_dtype: str | None) -> tuple[Any, ...]:
    """The accumulator after each of k micro-steps (the k-th: what ``inner`` received), for
    gradients in ``dtype``; and the last state."""
    tx = optkit.accumulate_gradients(recorder(), every_k, accumulator_dtype=accumulator_dtype)
    params = jnp.zeros(SUM_SHAPE, dtype)
    state = tx.init(params)
    update = jax.jit(tx.update)
    sums = []
    for gradient in micro_gradients(every_k, dtype):
        updates, state = update(jnp.asarray(gradient, dtype), state, params)
        sums.append(state.accumulator if not optkit.optimizer_stepped(state) else updates)
    return tuple(sums), state


def assert_sums_match(actual: Any, expected: list[np.ndarray], dtype: str, every_k: int) -> None:
    """Bitwise in bfloat16 (the term is rounded before the add, as in torch), and in float32 and
    float64 for k a power of two (exact products). Otherwise XLA fuses the multiply and the add
    in float32 and float64, and keeps float16 terms in float32 on CPU (one rounding, not two):
    each term may then differ in its last bit."""
    exact = dtype == "bfloat16" or (dtype != "float16" and every_k & (every_k - 1) == 0)
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        got = np.asarray(jnp.asarray(got).astype(jnp.float64))
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=f"micro-step {i}")
        else:
            ulp = np.finfo(dtype).eps * np.abs(want).max()
            np.testing.assert_allclose(got, want, rtol=0, atol=(i + 1) * ulp)


@pytest.mark.parametrize("every_k", [3, 4])
@pytest.mark.parametrize("dtype", SUM_DTYPES)
def test_accumulator_is_torchs_grad_sum(dtype, every_k):
    sums, state = optkit_sums(dtype, every_k, dtype)
    assert state.accumulator.dtype == dtype and sums[-1].dtype == dtype
    expected = expected_sums(micro_gradients(every_k, dtype), every_k, dtype)
    assert_sums_match(sums, expected, dtype, every_k)


@pytest.mark.torch
@pytest.mark.parametrize("every_k", [3, 4])
@pytest.mark.parametrize("dtype", SUM_DTYPES)
def test_accumulator_matches_live_torch(dtype, every_k):
    gradients = micro_gradients(every_k, dtype)
    expected = accumulation_oracle.torch_accumulated(gradients, every_k, dtype)
    for got, want in zip(expected_sums(gradients, every_k, dtype), expected, strict=True):
        np.testing.assert_array_equal(got, want)  # the numpy rules above are torch's
    assert_sums_match(optkit_sums(dtype, every_k, dtype)[0], expected, dtype, every_k)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_params_accumulate_in_float32(dtype):
    sums, state = optkit_sums(dtype, 4, None)
    assert state.accumulator.dtype == jnp.float32
    assert [s.dtype for s in sums] == [jnp.float32] * 3 + [jnp.dtype(dtype)]
    # The float32 sum of the terms (exact products for k = 4), rounded once for inner.
    float32_sums = expected_sums(micro_gradients(4, dtype), 4, "float32")
    assert_sums_match(sums[:-1], float32_sums[:-1], "float32", 4)
    last = np.asarray(jnp.asarray(float32_sums[-1], jnp.float32).astype(dtype))
    np.testing.assert_array_equal(np.asarray(sums[-1]), last)
    # Fewer roundings than torch's sum in the params' dtype: never farther from the exact mean.
    exact = micro_gradients(4, dtype).mean(axis=0)
    in_dtype = expected_sums(micro_gradients(4, dtype), 4, dtype)[-1]
    assert np.abs(last.astype(np.float64) - exact).sum() < np.abs(in_dtype - exact).sum()


def test_accumulator_dtype_float64_for_float32_params():
    sums, state = optkit_sums("float32", 4, "float64")
    assert state.accumulator.dtype == jnp.float64 and sums[-1].dtype == jnp.float32
    float64_sums = expected_sums(micro_gradients(4, "float32"), 4, "float64")
    assert_sums_match(sums[:-1], float64_sums[:-1], "float64", 4)
    np.testing.assert_array_equal(sums[-1], float64_sums[-1].astype(np.float32))


def test_doc_example_prints_what_the_page_shows():
    """The guide's runnable example (its optkit block followed by the output shown) runs as
    written, at JAX's default precision."""
    found = re.findall(r"```python\n(# optkit\n.*?)```\n\n```text\n(.*?)```", DOC.read_text(), re.S)
    assert len(found) == 1
    code, shown = found[0]
    printed = io.StringIO()
    with jax.enable_x64(False), contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {"__name__": "gradient_accumulation_doc"})
    assert printed.getvalue() == shown


def test_what_the_page_says_of_optax_multisteps(golden):
    """Pins docs/gradient_accumulation.md's comparison: around the same optimizer, on the same
    float64 run, optax.MultiSteps' default float32 accumulator is 1e-8 to 1e-7 from torch, a
    float64 accumulator agrees to rounding; and an inf micro-batch gradient gives NaN updates at
    once."""
    import optax

    case = BY_ID["sgd_momentum-k3"]
    expected = golden.params[f"{case.id}:float64:w"]

    def trajectory(accumulator_dtype: Any) -> np.ndarray:
        tx = optax.MultiSteps(case.make_inner(), 3, accumulator_dtype=accumulator_dtype)
        update = jax.jit(tx.update)
        params = {name: jnp.asarray(value) for name, value in initial_params("float64").items()}
        state = tx.init(params)
        xs, ys = micro_batches(case.steps * 3, "float64")
        path = []
        for i in range(case.steps * 3):
            updates, state = update(gradient_fn()(params, xs[i], ys[i]), state, params)
            params = optkit.apply_updates(params, updates)
            path.append(np.asarray(params["w"]))
        return np.stack(path[2::3])

    error = np.max(np.abs(trajectory(jnp.float32) - expected) / np.abs(expected))
    assert 1e-9 < error < 1e-5
    np.testing.assert_allclose(trajectory(jnp.float64), expected, **TOLERANCES["float64"])
    tx = optax.MultiSteps(optax.sgd(0.1), 3)
    updates, _ = tx.update(jnp.array([jnp.inf, 1.0]), tx.init(jnp.zeros(2)))
    assert np.isnan(updates[0]) and updates[1] == 0.0
