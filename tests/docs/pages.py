"""Read the code of a documentation page and run it as a reader pasting it would.

A page's ``python`` blocks run in order, in one namespace, at JAX's default precision (float32),
in a fresh working directory. Markdown renderers (mkdocs, GitHub) do not show HTML comments, so
a page says more than its visible blocks with these (indented like the code inside an
admonition):

- **Hidden set-up**: ``<!-- setup: CODE -->``, or ``<!-- setup:`` followed by lines of code and
  a closing ``-->``, runs in the page's namespace where it stands, before the next block. It
  makes a fragment runnable without showing the scaffolding: a ``model`` and ``dataset`` for a
  torch loop, the hyperparameter names of a schematic ``chain``.
- **Fresh interpreter**: ``<!-- fresh-interpreter -->`` right before a block runs that block
  alone in a new Python process (for code that must run before JAX starts, such as setting
  ``XLA_FLAGS``); its namespace does not carry over.
- **Shown output**: a ``text`` block that directly follows a ``python`` block is what that block
  prints. The run must print the same, up to line wrapping and spacing (pages wrap long reprs).

A page's ``python`` blocks are numbered from 0 in the order they appear (``Block.index``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

ROOT = Path(__file__).resolve().parents[2]

# A fenced block (```lang ... ```, possibly indented), a set-up comment or a fresh-interpreter mark.
_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?:"
    r"(?P<fence>```+)(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$"
    r"|<!--[ \t]*setup:(?P<setup>.*?)-->"
    r"|(?P<fresh><!--[ \t]*fresh-interpreter[ \t]*-->))",
    re.MULTILINE | re.DOTALL,
)
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class Block:
    """One ``python`` block of a page: its code, where it starts, and what it must print."""

    index: int
    line: int  # the page's line number of the block's first code line
    code: str
    setup: list[tuple[int, str]] = field(default_factory=list)  # (line, code) run before it
    fresh_interpreter: bool = False
    shown_output: str | None = None

    @property
    def first_line(self) -> str:
        return next((line for line in self.code.splitlines() if line.strip()), "")


def page_paths() -> list[str]:
    """README.md and every page under docs/, relative to the repository root."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [str(page.relative_to(ROOT)) for page in pages]


def _dedent(body: str, indent: str) -> str:
    return "".join(
        line[len(indent) :] if line.startswith(indent) else line.lstrip(" \t")
        for line in body.splitlines(keepends=True)
    )


def _setup_code(text: str, line: int) -> tuple[int, str]:
    """``(first line, code)`` of a set-up comment's text that starts at ``line``."""
    first, _, rest = text.partition("\n")
    if not rest.strip():
        return line, first.strip() + "\n"
    if first.strip():
        raise ValueError(f"line {line}: a multi-line setup comment starts its code on a new line")
    return line + 1, textwrap.dedent(rest).strip() + "\n"


def parse(page: str) -> list[Block]:
    """The page's ``python`` blocks with their hidden set-up and shown output."""
    text = (ROOT / page).read_text()
    blocks: list[Block] = []
    setup: list[tuple[int, str]] = []
    fresh = False
    previous_end, previous_python = 0, False
    for match in _ITEM.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match["setup"] is not None or match["fresh"] is not None:
            if match["fresh"]:
                fresh = True
            else:
                setup.append(_setup_code(match["setup"], line))
            previous_python = False
            continue
        lang, body = match["lang"], _dedent(match["body"], match["indent"])
        if lang == "python":
            blocks.append(Block(len(blocks), line + 1, body, setup, fresh))
            setup, fresh = [], False
        elif lang == "text" and previous_python and not text[previous_end : match.start()].strip():
            blocks[-1].shown_output = body
        previous_end, previous_python = match.end(), lang == "python"
    if setup or fresh:
        raise ValueError(
            f"{page}: a setup or fresh-interpreter comment at the end precedes no block"
        )
    return blocks


@functools.cache
def blocks_of(page: str) -> tuple[Block, ...]:
    return tuple(parse(page))


def same_output(printed: str, shown: str) -> bool:
    """Equal up to line wrapping and spacing: the same words, numbers and symbols in order."""
    return _TOKEN.findall(printed) == _TOKEN.findall(shown)


class BlockFailed(Exception):
    """A block (or its set-up) raised."""

    def __init__(self, page: str, block: Block, error: BaseException):
        super().__init__(
            f"{page} block {block.index} (line {block.line}: {block.first_line!r}) raised "
            f"{type(error).__name__}: {error}"
        )


@dataclass
class BlockRun:
    block: Block
    printed: str
    error: Exception | None
    namespace: dict[str, Any]  # a shallow copy of the page's namespace right after the block


@dataclass
class PageRun:
    blocks: list[BlockRun]
    workdir: Path  # the page's working directory, kept until the test session ends

    def after(self, name: str) -> dict[str, Any]:
        """The namespace right after the block that first defines ``name``."""
        return next(run.namespace for run in self.blocks if name in run.namespace)


@contextlib.contextmanager
def no_pickle() -> Iterator[None]:
    """Make pickle's entry points fail: what runs inside provably pickles nothing."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle was called")

    import pickle

    saved = {name: getattr(pickle, name) for name in ("dump", "dumps", "load", "loads")}
    try:
        for name in saved:
            setattr(pickle, name, refuse)
        yield
    finally:
        for name, function in saved.items():
            setattr(pickle, name, function)


# What a page runs under, beyond the defaults.
GUARDS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    # Checkpoints go through orbax, never pickle (tests/integration/test_checkpoint.py).
    "docs/checkpointing.md": no_pickle,
}


def _exec(code: str, line: int, page: str, namespace: dict[str, Any]) -> None:
    # Leading newlines make tracebacks point at the page's own line numbers.
    exec(compile("\n" * (line - 1) + code, str(ROOT / page), "exec"), namespace)


def _run_in_fresh_interpreter(block: Block, page: str, workdir: Path) -> str:
    code = "".join(code for _, code in block.setup) + block.code
    # The reader's environment: no test-session flags, default precision.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode} in a fresh interpreter:\n{done.stderr}")
    return done.stdout


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="optkit-docs-"))
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)


def run_page(page: str, expected_to_fail: frozenset[int] = frozenset()) -> PageRun:
    """Run the page's blocks in order; raise :class:`BlockFailed` at the first failure whose
    index is not in ``expected_to_fail``. The global JAX precision, the working directory and
    ``sys.modules`` are restored afterwards."""
    # A real module: Flax dataclasses look up the module that defines them.
    module = types.ModuleType("docs_page_" + re.sub(r"\W", "_", page))
    namespace = module.__dict__
    workdir = Path(tempfile.mkdtemp(dir=_SESSION_DIR))
    runs: list[BlockRun] = []
    x64, cwd = jax.config.jax_enable_x64, os.getcwd()
    sys.modules[module.__name__] = module
    try:
        os.chdir(workdir)
        jax.config.update("jax_enable_x64", False)
        with GUARDS.get(page, contextlib.nullcontext)():
            for block in blocks_of(page):
                printed, error = io.StringIO(), None
                try:
                    if block.fresh_interpreter:
                        printed.write(_run_in_fresh_interpreter(block, page, workdir))
                    else:
                        with contextlib.redirect_stdout(printed):
                            for line, code in block.setup:
                                _exec(code, line, page, namespace)
                            _exec(block.code, block.line, page, namespace)
                except Exception as exception:
                    if block.index not in expected_to_fail:
                        raise BlockFailed(page, block, exception) from exception
                    error = exception
                runs.append(BlockRun(block, printed.getvalue(), error, dict(namespace)))
    finally:
        os.chdir(cwd)
        jax.config.update("jax_enable_x64", x64)
        sys.modules.pop(module.__name__, None)
    return PageRun(runs, workdir)


@functools.cache
def cached_run(page: str, expected_to_fail: frozenset[int] = frozenset()) -> PageRun:
    """:func:`run_page`, once per test session: other tests read a page's namespaces too."""
    return run_page(page, expected_to_fail)
