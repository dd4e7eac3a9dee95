"""docs/torch_checkpoints.md runs as written and prints what it shows.

Its Python blocks run in order as one script, in a fresh directory, at JAX's default precision
(float32) as a user runs them; a ``text`` block right after a Python block is that block's
output.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

from tests.support.torch_oracle import require_torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "torch_checkpoints.md"
_FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def page_blocks() -> list[tuple[str, int, str | None]]:
    """``(code, first line, shown output or None)`` for each Python block of the page."""
    text = DOC.read_text()
    blocks: list[tuple[str, int, str | None]] = []
    previous_end, previous_lang = 0, None
    for match in _FENCE.finditer(text):
        lang, body = match.groups()
        follows_code = previous_lang == "python" and not text[previous_end : match.start()].strip()
        if lang == "python":
            blocks.append((body, text.count("\n", 0, match.start()) + 2, None))
        elif lang == "text" and follows_code:
            blocks[-1] = (*blocks[-1][:2], body)
        previous_end, previous_lang = match.end(), lang
    return blocks


def test_page_runs_and_prints_what_it_shows(tmp_path):
    require_torch()
    namespace: dict = {"__name__": "torch_checkpoints_page"}
    with pytest.MonkeyPatch.context() as patch, jax.enable_x64(False):
        patch.chdir(tmp_path)
        for code, line, shown in page_blocks():
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                # Leading newlines make tracebacks point at the page's own line numbers.
                exec(compile("\n" * (line - 1) + code, str(DOC), "exec"), namespace)
            if shown is not None:
                assert printed.getvalue() == shown, f"block at line {line}"
