"""The training-loop guides' complete programs run as written and print what the pages show.

In docs/loss_scaling.md and docs/gradient_accumulation.md, a ``python`` block followed at once
by a ``text`` block is a whole program and its output; the other blocks are torch's side or
fragments of those programs. Each program runs on its own, at JAX's default precision (float32)
as a user runs it, and its printed lines must equal the page's. (docs/weight_averaging.md has its
own test: tests/loop/test_weight_averaging_docs.py.)
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("loss_scaling.md", "gradient_accumulation.md")
# A python block (no fence inside) directly followed by a text block.
_PROGRAM = re.compile(r"```python\n((?:(?!```).)*)```\n\n```text\n(.*?)```", re.DOTALL)


def programs() -> list[tuple[str, int, str, str]]:
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text()
        for match in _PROGRAM.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((page, line, match.group(1), match.group(2)))
    return found


PROGRAMS = programs()


def test_each_page_has_a_program():
    assert {page for page, *_ in PROGRAMS} == set(PAGES)


@pytest.mark.parametrize(
    ("page", "line", "code", "expected"), PROGRAMS, ids=[f"{p}:{n}" for p, n, *_ in PROGRAMS]
)
def test_program_prints_what_the_page_shows(page, line, code, expected):
    printed = io.StringIO()
    # Leading newlines make tracebacks point at the page's own line numbers.
    compiled = compile("\n" * (line - 1) + code, str(DOCS / page), "exec")
    with jax.enable_x64(False), contextlib.redirect_stdout(printed):
        exec(compiled, {"__name__": f"doc_{Path(page).stem}"})
    assert printed.getvalue() == expected
