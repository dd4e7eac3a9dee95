"""The registry is complete: every public optimizer has a row, and every row is whole.

A suite that iterates ``tests/support/registry.py`` covers every optimizer only if the registry
does; these tests fail when an optimizer is added to ``optkit`` without its row, its docs page,
its README entry or its hyperparameters' ranges.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

import optkit
from optkit import _validation
from tests.parity.cases import CASES
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import BY_NAME, REGISTRY

ROOT = Path(__file__).resolve().parents[1]
by_row = pytest.mark.parametrize("info", REGISTRY, ids=[info.name for info in REGISTRY])


def public_optimizers() -> set[str]:
    """The names in ``optkit.__all__`` that are optimizers: functions defined in an
    ``optkit.optimizers`` module that return a transform, other than its ``scale_by_*``
    primitives (helpers such as ``averaged_params`` return something else)."""
    return {
        name
        for name in optkit.__all__
        if inspect.isfunction(obj := getattr(optkit, name))
        and obj.__module__.startswith("optkit.optimizers.")
        and typing.get_type_hints(obj).get("return") is optkit.GradientTransformation
        and not name.startswith("scale_by_")
    }


def test_every_public_optimizer_has_a_row():
    assert public_optimizers() == set(BY_NAME)


@by_row
def test_every_numeric_hyperparameter_has_a_range(info: OptimizerInfo):
    """set_hyperparams range-checks through the same table, so a missing name would pass
    unchecked at run time."""
    missing = [name for name in info.numeric_arguments() if name not in _validation.RANGES]
    assert not missing, f"{info.name}: add {missing} to optkit._validation.RANGES"


@by_row
def test_variants_and_typical_set_up_build(info: OptimizerInfo):
    for kwargs in (*info.variants.values(), info.typical):
        assert isinstance(info.factory(**kwargs), optkit.GradientTransformation)
    flags = info.flags()
    switched = {name for kwargs in info.variants.values() for name in kwargs if name in flags}
    assert switched == set(flags), (
        f"{info.name}: no parity variant turns on {set(flags) - switched}"
    )


@by_row
def test_every_row_has_parity_cases(info: OptimizerInfo):
    ids = {case.id for case in CASES if case.family == info.name}
    expected = {f"{info.name}-{variant}" for variant in info.variants} | {f"{info.name}-tensor_lr"}
    if info.param_groups:  # torch's LBFGS refuses param groups
        expected.add(f"{info.name}-param_groups")
    assert ids == expected


@by_row
def test_docs_page_and_api_reference(info: OptimizerInfo):
    page = ROOT / "docs" / info.docs_page
    assert page.is_file(), f"{info.name}: no docs page {page}"
    assert f"torch.optim.{info.torch_class}" in page.read_text()
    nav = (ROOT / "mkdocs.yml").read_text()
    assert info.docs_page in nav, f"{info.docs_page} is not in mkdocs.yml's nav"
    api = (ROOT / "docs" / "api" / "optimizers.md").read_text()
    assert f"::: optkit.{info.name}\n" in api


@by_row
def test_readme_and_migration_guide_map_the_torch_class(info: OptimizerInfo):
    readme = (ROOT / "README.md").read_text()
    assert f"| `optim.{info.torch_class}` | `optkit.{info.name}` |" in readme
    guide = (ROOT / "docs" / "migrating_from_torch.md").read_text()
    row = f"| `optim.{info.torch_class}` | [`optkit.{info.name}`][optkit.{info.name}] |"
    assert row in guide, f"docs/migrating_from_torch.md has no row {row}"


def test_every_public_name_is_in_the_api_reference():
    text = "".join(page.read_text() for page in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: optkit\.(\w+)", text, flags=re.MULTILINE))
    assert set(optkit.__all__) <= documented, sorted(set(optkit.__all__) - documented)
