"""docs/migrating_from_torch.md's recipe for torch's ``param_groups[i][name] = value`` runs as
written and prints what the page shows.

The page's program (the ``python`` block right after the comment ``# optkit: the values live in
the optimizer state``) is followed by a ``text`` block with its output. It runs at JAX's default
precision (float32), as a user runs it.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import jax

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migrating_from_torch.md"
_PROGRAM = re.compile(
    r"```python\n(# optkit: the values live in the optimizer state(?:(?!```).)*)```\n\n"
    r"```text\n(.*?)```",
    re.DOTALL,
)


def test_per_group_recipe_runs_as_written() -> None:
    match = _PROGRAM.search(PAGE.read_text())
    assert match is not None, "the recipe's program and its output were not found"
    program, shown = match.groups()
    printed = io.StringIO()
    with jax.enable_x64(False), contextlib.redirect_stdout(printed):
        exec(compile(program, str(PAGE), "exec"), {})
    assert printed.getvalue().splitlines() == shown.splitlines()
