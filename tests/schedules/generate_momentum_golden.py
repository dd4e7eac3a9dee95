"""Write torch's cycled momentum and momentum-cycled trajectories to ``tests/schedules/golden/``.

The golden file lets the momentum-cycling tests (tests/schedules/test_momentum.py) run where
torch is not installed. Regenerate it after changing the tables in ``momentum_cases.py``, from
the repository root::

    python -m tests.schedules.generate_momentum_golden

Format: one compressed ``.npz`` holding ``momentum:<id>`` (torch's momentum before each update,
float64) for each momentum case, ``trajectory:<id>:<dtype>:<leaf>`` (the params before and after
each update) for each trajectory row in float64 and float32, ``spec:<kind>:<id>`` with each torch
set-up as JSON so a stale file is caught, and ``torch_version``. A separate file from
``torch_lr.npz``, so the learning-rate table can grow without regenerating this one.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "torch_momentum.npz"


@dataclasses.dataclass(frozen=True)
class MomentumGolden:
    """The golden file's contents: specs and values by case id, trajectories by (row, dtype)."""

    torch_version: str
    momentum_specs: dict[str, str]
    momentum: dict[str, np.ndarray]
    trajectory_specs: dict[str, str]
    trajectories: dict[tuple[str, str], dict[str, np.ndarray]]


def load_golden() -> MomentumGolden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    trajectories: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("trajectory:"):
            _, row, dtype, leaf = key.split(":")
            trajectories.setdefault((row, dtype), {})[leaf] = value

    def strip(prefix: str) -> dict[str, np.ndarray]:
        return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

    return MomentumGolden(
        torch_version=str(arrays["torch_version"]),
        momentum_specs={k: str(v) for k, v in strip("spec:momentum:").items()},
        momentum=strip("momentum:"),
        trajectory_specs={k: str(v) for k, v in strip("spec:trajectory:").items()},
        trajectories=trajectories,
    )


def main() -> None:
    """Run torch for every case and row and write the golden file."""
    import torch

    from tests.schedules.momentum_cases import (
        DTYPES,
        MOMENTUM_CASES,
        TRAJECTORY_ROWS,
        torch_momentum,
        torch_trajectory,
    )

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in MOMENTUM_CASES:
        arrays[f"spec:momentum:{case.id}"] = np.array(case.torch_spec())
        arrays[f"momentum:{case.id}"] = torch_momentum(case)
    for row in TRAJECTORY_ROWS:
        arrays[f"spec:trajectory:{row.id}"] = np.array(row.torch_spec())
        for dtype_name, dtype in DTYPES.items():
            for leaf, values in torch_trajectory(row, dtype).items():
                arrays[f"trajectory:{row.id}:{dtype_name}:{leaf}"] = values
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(
        f"wrote {GOLDEN_PATH} ({len(MOMENTUM_CASES)} momentum cases, {len(TRAJECTORY_ROWS)} "
        f"trajectories, {size_kib:.0f} KiB)"
    )


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
