"""The strong-Wolfe line search and its cubic interpolation against torch's own functions,
``torch.optim.lbfgs._strong_wolfe`` and ``_cubic_interpolate``, on small objectives chosen so that
every branch of torch's search is taken (bracketing by extrapolation, zooming, points replacing
either end of the bracket, steps pushed off an end, a spent budget, a bracket below tolerance)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optkit.optimizers import _line_search
from tests.support.torch_oracle import require_torch


@pytest.mark.torch
def test_cubic_interpolate_matches_torch() -> None:
    torch = require_torch()
    from torch.optim.lbfgs import _cubic_interpolate

    rng = np.random.default_rng(0)
    for k in range(200):
        x1, x2, f1, f2 = (float(v) for v in rng.normal(size=4) * [1.0, 1.0, 3.0, 3.0])
        g1, g2 = rng.normal(size=2) * 4.0  # same signs often: no real minimum, the midpoint
        bounds = None if k % 2 else tuple(sorted(float(v) for v in rng.normal(size=2) * 2.0))
        expected = _cubic_interpolate(
            x1, f1, torch.tensor(g1), x2, f2, torch.tensor(g2), bounds=bounds
        )
        got = _line_search.cubic_interpolate(
            *(jnp.float64(v) for v in (x1, f1, g1, x2, f2, g2)),
            bounds=None if bounds is None else tuple(jnp.float64(b) for b in bounds),
        )
        np.testing.assert_allclose(float(got), float(expected), rtol=1e-14, atol=1e-15)


WEIGHTS = [1.0, 4.0]


def quadratic(xp: Any, x: Any) -> Any:
    return xp.sum(xp.asarray(WEIGHTS, dtype=x.dtype) * (x - 1.0) ** 2)


def wiggly(xp: Any, x: Any) -> Any:
    return xp.sum((x - 1.0) ** 2 + 0.8 * xp.sin(4.0 * x))


def steep_wiggly(xp: Any, x: Any) -> Any:
    return xp.sum((x - 1.0) ** 2 + 2.0 * xp.sin(5.0 * x))


@dataclasses.dataclass(frozen=True)
class Search:
    objective: Any
    start: tuple[float, float]
    step_size: float
    max_ls: int = 25
    tolerance_change: float = 1e-9
    extrapolations: bool | None = None  # whether torch extrapolates (None: either)
    zooms: bool | None = None  # whether torch interpolates inside a bracket
    evals: int | None = None  # torch's evaluation count, where the case is about it


SEARCHES = {
    "accepts_the_first_step": Search(quadratic, (0.0, 0.0), 0.15, extrapolations=False, evals=1),
    "extrapolates": Search(quadratic, (0.0, 0.0), 1e-3, extrapolations=True, zooms=False),
    "zooms": Search(quadratic, (0.0, 0.0), 5.0, extrapolations=False, zooms=True),
    "wiggly_zooms": Search(wiggly, (0.3, -0.6), 3.0, zooms=True),
    "wiggly_extrapolates": Search(wiggly, (-1.2, 2.5), 1e-2, extrapolations=True),
    "runs_out_of_evaluations": Search(quadratic, (0.0, 0.0), 1e-4, max_ls=2, evals=3),
    "one_evaluation": Search(wiggly, (0.3, -0.6), 3.0, max_ls=0, evals=1),
    "bracket_below_tolerance": Search(
        quadratic, (0.0, 0.0), 5.0, tolerance_change=100.0, zooms=False
    ),
    # Found by searching starts and steps with torch's branches counted: in the zoom, a point too
    # high replaces the high end, the old high end becomes the low end, and trial steps too close
    # to an end are pushed a tenth of the bracket away from the low end, or from the high end.
    "pushes_off_the_low_end": Search(
        steep_wiggly, (-3.855012367465881, -2.686904602561047), 21.93493958916968, zooms=True
    ),
    "pushes_off_the_high_end": Search(
        steep_wiggly, (-3.9713484917885, -2.33872723049267), 11.706645360269851, zooms=True
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", SEARCHES)
def test_strong_wolfe_matches_torch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = require_torch()
    import torch.optim.lbfgs as torch_lbfgs

    case = SEARCHES[name]
    calls = {"extrapolations": 0, "zooms": 0}
    interpolate = torch_lbfgs._cubic_interpolate

    def counting(*args: Any, bounds: Any = None) -> Any:
        calls["zooms" if bounds is None else "extrapolations"] += 1
        return interpolate(*args, bounds=bounds)

    monkeypatch.setattr(torch_lbfgs, "_cubic_interpolate", counting)

    def torch_evaluate(x: Any) -> tuple[float, Any]:
        x = x.detach().requires_grad_(True)
        loss = case.objective(torch, x)
        loss.backward()
        return float(loss.detach()), x.grad

    x = torch.tensor(case.start, dtype=torch.float64)
    f, g = torch_evaluate(x)
    d = -g
    expected = torch_lbfgs._strong_wolfe(
        lambda x, t, d: torch_evaluate(x.add(d, alpha=float(t))),
        x,
        case.step_size,
        d,
        f,
        g,
        g.dot(d),
        tolerance_change=case.tolerance_change,
        max_ls=case.max_ls,
    )
    for kind in ("extrapolations", "zooms"):
        wanted = getattr(case, kind)
        assert wanted is None or (calls[kind] > 0) == wanted, (kind, calls)
    assert case.evals is None or expected[3] == case.evals

    value_and_grad = jax.value_and_grad(lambda x: case.objective(jnp, x))

    @jax.jit
    def search(x: jax.Array) -> _line_search.Found:
        f, g = value_and_grad(x)
        return _line_search.strong_wolfe(
            lambda t: _line_search.Evaluation(*value_and_grad(x + t * -g)),
            jnp.float64(case.step_size),
            -g,
            f,
            g,
            jnp.vdot(g, -g),
            max_ls=jnp.int32(case.max_ls),
            tolerance_change=case.tolerance_change,
        )

    found = search(jnp.asarray(case.start, jnp.float64))
    np.testing.assert_allclose(float(found.step_size), float(expected[2]), rtol=1e-12)
    np.testing.assert_allclose(float(found.value), expected[0], rtol=1e-12)
    np.testing.assert_allclose(found.grad, expected[1].numpy(), rtol=1e-11, atol=1e-13)
    assert int(found.evals) == expected[3]
