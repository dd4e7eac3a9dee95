"""Write torch's learning rates for every schedule and plateau case to ``tests/schedules/golden/``.

The golden file lets the schedule tests run where torch is not installed. Regenerate it after
changing the case tables, from the repository root::

    python -m tests.schedules.generate_golden        (or: python tests/schedules/generate_golden.py)

Format: one compressed ``.npz`` holding, for each schedule case, ``schedule:<id>`` (the lr before
each update, float64) and for each plateau case ``plateau:<id>:lr`` and ``plateau:<id>:params``
(the params after each update). ``spec:<kind>:<id>`` stores each case's torch setup as JSON, so a
stale file is caught by the tests; ``torch_version`` records where the values came from.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "torch_lr.npz"


@dataclasses.dataclass(frozen=True)
class Golden:
    """The contents of the golden file, by case id."""

    torch_version: str
    schedule_specs: dict[str, str]
    schedules: dict[str, np.ndarray]
    plateau_specs: dict[str, str]
    plateau_lrs: dict[str, np.ndarray]
    plateau_params: dict[str, np.ndarray]


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}

    def strip(prefix: str, suffix: str = "") -> dict[str, np.ndarray]:
        return {
            key.removeprefix(prefix).removesuffix(suffix): value
            for key, value in arrays.items()
            if key.startswith(prefix) and key.endswith(suffix)
        }

    return Golden(
        torch_version=str(arrays["torch_version"]),
        schedule_specs={k: str(v) for k, v in strip("spec:schedule:").items()},
        schedules=strip("schedule:"),
        plateau_specs={k: str(v) for k, v in strip("spec:plateau:").items()},
        plateau_lrs=strip("plateau:", ":lr"),
        plateau_params=strip("plateau:", ":params"),
    )


def main() -> None:
    """Run torch for every case and write the golden file."""
    # Imported here so that running this file directly can first put the repository root on
    # sys.path; the tests import only the loader above.
    import torch

    from tests.schedules.cases import PLATEAU_CASES, SCHEDULE_CASES
    from tests.schedules.oracle import torch_plateau, torch_schedule

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in SCHEDULE_CASES:
        arrays[f"spec:schedule:{case.id}"] = np.array(case.torch_spec())
        arrays[f"schedule:{case.id}"] = torch_schedule(case)
    for case in PLATEAU_CASES:
        lrs, params = torch_plateau(case)
        arrays[f"spec:plateau:{case.id}"] = np.array(case.torch_spec())
        arrays[f"plateau:{case.id}:lr"] = lrs
        arrays[f"plateau:{case.id}:params"] = params
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(
        f"wrote {GOLDEN_PATH} ({len(SCHEDULE_CASES)} schedules, {len(PLATEAU_CASES)} plateau "
        f"runs, {size_kib:.0f} KiB)"
    )


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
