"""docs/memory_and_scale.md's ZeRO-1 and multi-process sections: their program runs as written.

A ``python`` block followed (after at most a sentence) by a ``text`` block is a whole program and
its output. It runs in a fresh interpreter on 8 simulated CPU devices at JAX's default precision
(float32), as the page says, and must print the page's lines. Only these two sections are read:
other sections of the page are tested by their own suites.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "memory_and_scale.md"
SECTIONS = ("## ZeRO-1: partitioned optimizer state", "## Multi-process training")
_PROGRAM = re.compile(
    r"```python\n((?:(?!```).)*)```\n\n(?:(?!```).)*?```text\n(.*?)```", re.DOTALL
)


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(title + "\n")
    end = text.find("\n## ", start + len(title))
    return text[start : end if end != -1 else len(text)]


def programs() -> list[tuple[str, str, str]]:
    return [(title, *m.groups()) for title in SECTIONS for m in _PROGRAM.finditer(section(title))]


PROGRAMS = programs()


def test_the_zero_section_has_a_program():
    assert [title for title, *_ in PROGRAMS] == [SECTIONS[0]]


@pytest.mark.parametrize(("title", "code", "expected"), PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_program_prints_what_the_page_shows(title, code, expected):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == expected
