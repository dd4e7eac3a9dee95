"""The examples in optkit's docstrings run and print what they show.

They are written for JAX's default precision (float32), while this test session enables float64,
so they run in a fresh interpreter where ``jax_enable_x64`` is off.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import optkit

_RUNNER = """
import contextlib, doctest, importlib, io, json, sys
results = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        failed, attempted = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    results[name] = [failed, attempted, report.getvalue()]
print(json.dumps(results))
"""

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(optkit.__path__, prefix="optkit.") if not info.ispkg
)
# Modules whose public functions all carry a runnable example: every implementation module (no
# leading underscore) and the protocol.
MUST_HAVE_EXAMPLES = {name for name in MODULES if not name.rsplit(".", 1)[1].startswith("_")} | {
    "optkit._base"
}


@pytest.fixture(scope="module")
def doctest_results() -> dict[str, list]:
    completed = subprocess.run(
        [sys.executable, "-c", _RUNNER, *MODULES],
        capture_output=True,
        text=True,
        check=False,
        env={"JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu", "PATH": ""},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_pass(module, doctest_results):
    failed, attempted, report = doctest_results[module]
    assert failed == 0, f"{failed} of {attempted} docstring examples in {module} failed:\n{report}"
    if module in MUST_HAVE_EXAMPLES:
        assert attempted > 0, f"{module} should carry runnable examples"
