"""Write torch.optim's float16/bfloat16 step records for the half-precision suite.

The golden file lets ``tests/reliability/test_half_precision.py`` run where torch is not
installed. Regenerate it after changing a case (``half_cases.py``) or a registry row's variant
it uses, from the repository root::

    python -m tests.reliability.generate_half_golden

Format: one compressed ``.npz`` (``golden/half_precision.npz``) holding, per case, the arrays of
``half_cases.to_arrays`` and the case's torch set-up as JSON (``<id>|spec``), so a stale file is
caught by the tests; and the torch version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden" / "half_precision.npz"


def load_golden() -> dict[str, np.ndarray]:
    """The golden file's arrays (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    import torch

    from tests.reliability.half_cases import CASES, run_torch, to_arrays

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in CASES:
        arrays.update(to_arrays(case, run_torch(case)))
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {len(CASES)} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
