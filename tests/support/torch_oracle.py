"""torch as the parity oracle: available, or skipped, or (in CI) required.

Tests that run torch live call :func:`require_torch`. Without torch they are skipped, unless
``OPTKIT_REQUIRE_TORCH=1`` (set by ``.ci/run``), where a missing torch fails the test: CI must
never count a skipped parity test as a pass.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def require_torch() -> ModuleType:
    """The torch module; skip the calling test without it, or fail it when torch is required."""
    if os.environ.get("OPTKIT_REQUIRE_TORCH") != "1":
        return pytest.importorskip("torch", reason="torch is not installed")
    try:
        import torch
    except ImportError as error:
        pytest.fail(f"OPTKIT_REQUIRE_TORCH=1 but torch cannot be imported: {error}")
    return torch


def require_torchao() -> ModuleType:
    """The torchao module (the oracle of :func:`optkit.quantize_state`), under the same rule as
    :func:`require_torch`."""
    require_torch()
    if os.environ.get("OPTKIT_REQUIRE_TORCH") != "1":
        return pytest.importorskip("torchao", reason="torchao is not installed")
    try:
        import torchao
    except ImportError as error:
        pytest.fail(f"OPTKIT_REQUIRE_TORCH=1 but torchao cannot be imported: {error}")
    return torchao
