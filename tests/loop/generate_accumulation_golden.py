"""Write torch's accumulation trajectories to ``tests/loop/golden/accumulation.npz``.

The golden file lets the accumulation parity tests run where torch is not installed. Regenerate
it after changing the case table, from the repository root::

    python -m tests.loop.generate_accumulation_golden

Format: one compressed ``.npz`` holding, for each case and dtype, ``<id>:<dtype>:<leaf>`` (the
leaf after each optimizer step, stacked) and ``spec:<id>`` (the case's torch setup as JSON, so a
stale file is caught by the tests); ``torch_version`` records where the values came from.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "accumulation.npz"


@dataclasses.dataclass(frozen=True)
class Golden:
    """The contents of the golden file."""

    torch_version: str
    specs: dict[str, str]
    """Case id -> the torch spec the values were generated from."""
    params: dict[str, np.ndarray]
    """``<id>:<dtype>:<leaf>`` -> that leaf after each optimizer step."""


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return Golden(
        torch_version=str(arrays.pop("torch_version")),
        specs={
            key.removeprefix("spec:"): str(value)
            for key, value in arrays.items()
            if key.startswith("spec:")
        },
        params={key: value for key, value in arrays.items() if not key.startswith("spec:")},
    )


def main() -> None:
    """Run torch for every case and dtype and write the golden file."""
    # Imported here so that running this file directly can first put the repository root on
    # sys.path; the tests import only the loader above.
    import torch

    from tests.loop.accumulation_cases import CASES, DTYPES
    from tests.loop.accumulation_oracle import torch_trajectory

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in CASES:
        arrays[f"spec:{case.id}"] = np.array(case.torch_spec())
        for dtype in DTYPES:
            for leaf, values in torch_trajectory(case, dtype).items():
                arrays[f"{case.id}:{dtype}:{leaf}"] = values
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(f"wrote {GOLDEN_PATH} ({len(CASES)} cases x {len(DTYPES)} dtypes, {size_kib:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
