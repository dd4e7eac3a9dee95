"""Every ``python`` block of README.md and docs/ runs as written and prints what the page shows.

One test per page: its blocks run in order in one namespace, torch's side included (the ``test``
extra installs torch), with the page's hidden set-up comments (see tests/docs/pages.py for the
conventions). A ``text`` block right after a ``python`` block is that block's output and must be
printed, up to line wrapping.

No block is excluded. A block that fails because of a bug in optkit that another branch is
fixing is listed in KNOWN_BROKEN, and the test asserts that it still fails the way the row says:
once the bug is fixed the test fails, and the row is removed.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from tests.docs.pages import blocks_of, cached_run, page_paths, parse, same_output
from tests.support.torch_oracle import require_torch


class KnownBroken(NamedTuple):
    error: type[Exception]
    message: str  # a fragment of the error message the block raises today
    reason: str
    branch: str  # the branch that fixes it


# (page, block index): a block that fails today because of a bug in optkit, not in the page.
KNOWN_BROKEN: dict[tuple[str, int], KnownBroken] = {}

PAGES = [page for page in page_paths() if blocks_of(page)]
_USES_TORCH = re.compile(r"^\s*(import torch|from torch)\b", re.MULTILINE)


def uses_torch(page: str) -> bool:
    return any(
        _USES_TORCH.search(code)
        for block in blocks_of(page)
        for code in [block.code, *(code for _, code in block.setup)]
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page):
    if uses_torch(page):
        require_torch()
    broken = {index: row for (name, index), row in KNOWN_BROKEN.items() if name == page}
    for run in cached_run(page, frozenset(broken)).blocks:
        block, where = run.block, f"{page} block {run.block.index} (line {run.block.line})"
        if block.index in broken:
            row = broken[block.index]
            assert run.error is not None, f"{where} runs now: remove its KNOWN_BROKEN row"
            assert isinstance(run.error, row.error), f"{where}: {run.error!r}"
            assert row.message in str(run.error), f"{where}: {run.error!r}"
        elif block.shown_output is not None:
            assert same_output(run.printed, block.shown_output), (
                f"{where} prints\n{run.printed}\nwhere the page shows\n{block.shown_output}"
            )


def test_known_broken_rows_name_existing_blocks():
    for page, index in KNOWN_BROKEN:
        assert page in PAGES and index < len(blocks_of(page)), (page, index)


def test_readme_and_guides_are_collected():
    assert {"README.md", "docs/index.md", "docs/migrating_from_torch.md"} <= set(PAGES)
    assert sum(len(blocks_of(page)) for page in PAGES) > 100


def test_conventions_are_parsed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- setup: x = 1 -->\n"
        "```python\nprint(x)\n```\n\n```text\n1\n```\n\n"
        '??? example "Indented"\n\n'
        "    <!-- setup:\n    y = 2\n    z = 3\n    -->\n"
        "    ```python\n    print(y + z)\n    ```\n\n"
        "<!-- fresh-interpreter -->\n```python\nimport os\n```\n\n```bash\nls\n```\n"
    )
    first, second, third = parse(str(page))
    assert (first.setup, first.code, first.shown_output) == ([(1, "x = 1\n")], "print(x)\n", "1\n")
    assert (second.setup, second.code, second.line) == (
        [(13, "y = 2\nz = 3\n")],
        "print(y + z)\n",
        17,
    )
    assert third.fresh_interpreter and not first.fresh_interpreter and third.shown_output is None
