"""The reliability table's row type: one bad or edge input and the error a user must see.

Each piece of the reliability suite (param groups, hyperparameters, dtypes, complex numbers,
the optax contract...) keeps its rows in its own ``tests/reliability/test_*.py`` as a list of
:class:`Refused` rows (a user action and the error it must raise) and checks them with
:func:`check_refused`; rows whose expected answer is numeric compare against torch in the same
module. A row's ``id`` names the input, so a failure reads as the case a user hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest


@dataclasses.dataclass(frozen=True)
class Refused:
    """A user action that must fail early, with an error that says what went wrong.

    Attributes:
        id: What the user did, as a test id (``"adam-lr-keyword"``).
        action: Does it: builds the transform, calls ``init`` or ``update``...
        error: The exception type the user must get (a subclass passes).
        fragments: Substrings the message must contain: the argument or leaf path it names and
            what was expected.
    """

    id: str
    action: Callable[[], Any]
    error: type[Exception]
    fragments: tuple[str, ...]


def check_refused(row: Refused) -> None:
    """``row.action()`` raises ``row.error`` with every fragment in its message."""
    with pytest.raises(row.error) as raised:
        row.action()
    message = str(raised.value)
    missing = [fragment for fragment in row.fragments if fragment not in message]
    assert not missing, f"{row.id}: message lacks {missing}: {message!r}"


def params_of(rows: list[Refused]) -> list[Any]:
    """``rows`` as pytest params with their ids, for ``@pytest.mark.parametrize("row", ...)``."""
    return [pytest.param(row, id=row.id) for row in rows]
