"""Write torch.optim's float16/bfloat16 step records for the half-precision suite.

The golden file lets ``tests/reliability/test_half_precision.py`` run where torch is not
installed. Regenerate it after changing a case (``half_cases.py``) or a registry row's variant
it uses, from the repository root (naming rows regenerates only their files)::

    python -m tests.reliability.generate_half_golden [ROW ...]

Format: compressed ``.npz`` files in ``golden/``, one per registry row (``half_<row>.npz``),
each holding, per case, the arrays of ``half_cases.to_arrays`` and the case's torch set-up as
JSON (``<id>|spec``), so a stale file is caught by the tests; and the torch version. The tests
read every ``golden/half_*.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "golden"


def load_golden() -> dict[str, np.ndarray]:
    """The arrays of every ``golden/half_*.npz`` (plain arrays and strings only; no pickles)."""
    arrays: dict[str, np.ndarray] = {}
    for path in sorted(FOLDER.glob("half_*.npz")):
        with np.load(path, allow_pickle=False) as data:
            arrays.update({key: data[key] for key in data.files})
    return arrays


def main(rows: list[str]) -> None:
    import torch

    from tests.reliability.half_cases import CASES, run_torch, to_arrays

    for row in rows or dict.fromkeys(case.row for case in CASES):
        cases = [case for case in CASES if case.row == row]
        if not cases:
            raise SystemExit(f"no half-precision cases for row {row!r}")
        arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
        for case in cases:
            arrays.update(to_arrays(case, run_torch(case)))
        path = FOLDER / f"half_{row}.npz"
        FOLDER.mkdir(exist_ok=True)
        np.savez_compressed(path, **arrays)
        print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
