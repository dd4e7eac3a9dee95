"""The README's example trains for real: run it in quick mode and check it learned."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    # examples/ is a folder of scripts, not a package, so load the file by path. Flax's module
    # dataclasses look their defining module up in sys.modules, so register it first.
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_train_digits_quick_run_learns():
    metrics = load_example("train_digits").main(["--quick", "--seed", "0"])

    assert metrics["epochs"] == 2
    # Chance is 1/10 with a loss near ln(10) ~ 2.3. Two epochs of adamw reach ~0.23 train loss and
    # 0.92-0.94 test accuracy over seeds 0-4; the bars leave room for platform differences.
    assert metrics["final_train_loss"] < 0.25 * metrics["initial_train_loss"]
    assert metrics["test_accuracy"] > 0.85
