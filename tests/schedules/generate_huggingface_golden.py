"""Write transformers' learning rates for every Hugging Face case to ``tests/schedules/golden/``.

The golden file lets the Hugging Face schedule tests run where transformers (and torch) are not
installed. Regenerate it after changing ``huggingface_cases.py``, from the repository root::

    python -m tests.schedules.generate_huggingface_golden

Format: one compressed ``.npz`` holding, for each case, ``lr:<id>`` (the lr before each update,
float64) and ``spec:<id>`` (the ``get_scheduler`` call as JSON, so a stale file is caught by the
tests); ``transformers_version`` records where the values came from.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "transformers_lr.npz"


@dataclasses.dataclass(frozen=True)
class Golden:
    """The contents of the golden file, by case id."""

    transformers_version: str
    specs: dict[str, str]
    lrs: dict[str, np.ndarray]


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return Golden(
        transformers_version=str(arrays["transformers_version"]),
        specs={k.removeprefix("spec:"): str(v) for k, v in arrays.items() if k.startswith("spec:")},
        lrs={k.removeprefix("lr:"): v for k, v in arrays.items() if k.startswith("lr:")},
    )


def main() -> None:
    """Run transformers for every case and write the golden file."""
    import transformers

    from tests.schedules.huggingface_cases import HUGGINGFACE_CASES, transformers_schedule

    arrays: dict[str, np.ndarray] = {"transformers_version": np.array(transformers.__version__)}
    for case in HUGGINGFACE_CASES:
        arrays[f"spec:{case.id}"] = np.array(case.spec())
        arrays[f"lr:{case.id}"] = transformers_schedule(case)
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(f"wrote {GOLDEN_PATH} ({len(HUGGINGFACE_CASES)} schedules, {size_kib:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
