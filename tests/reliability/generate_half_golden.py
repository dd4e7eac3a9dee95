"""Write torch.optim's float16/bfloat16 step records for the half-precision suite.

The golden files let ``tests/reliability/test_half_precision.py`` run where torch is not
installed. Regenerate them after changing a case (``half_cases.py``) or a registry row's variant
it uses, from the repository root (every row, or the rows named)::

    python -m tests.reliability.generate_half_golden [ROW ...]

Format: one compressed ``.npz`` per registry row (``golden/half_<row>.npz``) holding, per case
of the row, the arrays of ``half_cases.to_arrays`` and the case's torch set-up as JSON
(``<id>|spec``), so a stale file is caught by the tests; and the torch version. The arrays are
packed (:func:`encode`): values exact in the case's 16-bit dtype (params, gradients, state
buffers) are stored as that dtype's bits (``uint16``), half the size of float32;
:func:`load_golden` unpacks them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "golden"


def path_of(row: str) -> Path:
    """The golden file of one registry row."""
    return FOLDER / f"half_{row}.npz"


def _storage(case_id: str) -> type:
    import ml_dtypes

    return np.float16 if case_id.endswith("-float16") else ml_dtypes.bfloat16


def encode(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` packed into a few arrays: one flat array per dtype (float32 arrays that
    round-trip through their case's 16-bit dtype go in as that dtype's bits, ``uint16``), and
    ``index``, a JSON list of ``[key, dtype, shape]`` in order, strings holding their text (an
    ``.npz`` member per array would cost more than the arrays)."""
    index, flat = [], {}
    for key, value in arrays.items():
        if value.dtype.kind == "U":
            index.append([key, "text", str(value)])
            continue
        if value.dtype == np.float32:
            bits = value.astype(_storage(key.split("|")[0]))
            if np.array_equal(bits.astype(np.float32), value, equal_nan=True):
                value = bits.view(np.uint16)
        index.append([key, value.dtype.str, list(value.shape)])
        flat.setdefault(value.dtype.str, []).append(value.ravel())
    packed = {f"flat{dtype}": np.concatenate(parts) for dtype, parts in flat.items()}
    return {"index": np.array(json.dumps(index)), **packed}


def decode(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`encode` (``uint16`` arrays back to float32)."""
    arrays, offsets = {}, dict.fromkeys(packed, 0)
    for key, dtype, shape in json.loads(str(packed["index"])):
        if dtype == "text":
            arrays[key] = np.array(shape)
            continue
        size, start = int(np.prod(shape, dtype=np.int64)), offsets[f"flat{dtype}"]
        value = packed[f"flat{dtype}"][start : start + size].reshape(shape)
        offsets[f"flat{dtype}"] = start + size
        if value.dtype == np.uint16:
            value = value.view(_storage(key.split("|")[0])).astype(np.float32)
        arrays[key] = value
    return arrays


def load_golden() -> dict[str, np.ndarray]:
    """Every row's golden arrays, decoded (plain arrays and strings only; no pickles), and
    ``torch_version``: the versions the files were written with."""
    arrays: dict[str, np.ndarray] = {}
    versions = set()
    for path in sorted(FOLDER.glob("half_*.npz")):
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        versions.add(str(stored.pop("torch_version")))
        arrays.update(decode(stored))
    arrays["torch_version"] = np.array(", ".join(sorted(versions)))
    return arrays


def main(rows: list[str]) -> None:
    import torch

    from tests.reliability.half_cases import CASES, run_torch, to_arrays

    rows = rows or sorted({case.row for case in CASES})
    FOLDER.mkdir(exist_ok=True)
    for row in rows:
        cases = [case for case in CASES if case.row == row]
        if not cases:
            raise SystemExit(f"no half-precision case for row {row!r}")
        arrays: dict[str, np.ndarray] = {}
        for case in cases:
            arrays.update(to_arrays(case, run_torch(case)))
        packed = {"torch_version": np.array(torch.__version__), **encode(arrays)}
        np.savez_compressed(path_of(row), **packed)
        print(f"wrote {len(cases)} cases to {path_of(row)}")


if __name__ == "__main__":
    main(sys.argv[1:])
