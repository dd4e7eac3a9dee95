"""Write torch's results for every clipping-norm case to ``tests/loop/golden/clip_norm.npz``.

The golden file lets the clipping parity tests run where torch is not installed. Regenerate it
after changing ``tests/loop/clip_cases.py``, from the repository root::

    python -m tests.loop.generate_clip_golden

Format: one compressed ``.npz`` of plain arrays. For each tree case, ``tree:<id>:grads`` (the
input leaves flattened and concatenated in a dtype that holds each exactly: float32 for 16-bit
leaves, which NumPy's ``.npz`` cannot name), ``tree:<id>:totals`` (``clip_grad_norm_``'s return
for each of the case's runs, in the order of ``TreeCase.runs``) and ``tree:<id>:clipped`` (one
row per run: the clipped leaves, concatenated). For each training case, ``train:<id>:params``
(the params after each step, flattened) and ``train:<id>:norms``. ``spec:tree:<id>`` and
``spec:train:<id>`` store each case as JSON, so a stale file is caught by the tests;
``torch_version`` records the source.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from tests.loop.clip_cases import SHAPES, TRAIN_CASES, TREE_CASES, TreeCase, dtype_of
from tests.loop.clip_oracle import torch_train, torch_tree

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "clip_norm.npz"


@dataclasses.dataclass(frozen=True)
class Golden:
    """The contents of the golden file. Arrays keep the stored dtypes (16-bit as float32)."""

    torch_version: str
    tree_specs: dict[str, str]
    train_specs: dict[str, str]
    arrays: dict[str, np.ndarray]

    def grads(self, case: TreeCase) -> list[np.ndarray]:
        """The case's input leaves, in their dtypes."""
        return split(self.arrays[f"tree:{case.id}:grads"], case)

    def runs(self, case: TreeCase) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """torch's total norm (as stored) and clipped leaves (in their dtypes), run by run."""
        totals = self.arrays[f"tree:{case.id}:totals"]
        clipped = self.arrays[f"tree:{case.id}:clipped"]
        return [(total, split(row, case)) for total, row in zip(totals, clipped, strict=True)]

    def train(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays[f"train:{case_id}:params"], self.arrays[f"train:{case_id}:norms"]


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}

    def specs(kind: str) -> dict[str, str]:
        prefix = f"spec:{kind}:"
        return {k.removeprefix(prefix): str(v) for k, v in arrays.items() if k.startswith(prefix)}

    return Golden(str(arrays["torch_version"]), specs("tree"), specs("train"), arrays)


def _stored(array: np.ndarray) -> np.ndarray:
    """float32 for 16-bit floats (NumPy's .npz cannot name bfloat16); the array otherwise."""
    return array.astype(np.float32) if array.dtype.itemsize == 2 else array


def _concatenated(leaves: list[np.ndarray]) -> np.ndarray:
    stored = [_stored(leaf).ravel() for leaf in leaves]
    return np.concatenate(stored).astype(np.result_type(*stored))


def split(flat: np.ndarray, case: TreeCase) -> list[np.ndarray]:
    """The leaves of ``case`` from their concatenation, each in its own shape and dtype."""
    sizes = [math.prod(shape) for shape in SHAPES]
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    leaves = []
    for piece, shape, dtype in zip(pieces, SHAPES, case.leaf_dtypes(), strict=True):
        real = not dtype.startswith("complex")  # a real leaf in a complex concatenation
        leaves.append((piece.real if real else piece).reshape(shape).astype(dtype_of(dtype)))
    return leaves


def main() -> None:
    """Run torch for every case and write the golden file."""
    import torch  # here, so that the tests can load the golden file without torch

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in TREE_CASES:
        arrays[f"spec:tree:{case.id}"] = np.array(case.torch_spec())
        arrays[f"tree:{case.id}:grads"] = _concatenated(case.grads())
        runs = torch_tree(case)
        arrays[f"tree:{case.id}:totals"] = np.stack([_stored(total) for total, _ in runs])
        arrays[f"tree:{case.id}:clipped"] = np.stack([_concatenated(grads) for _, grads in runs])
    for case in TRAIN_CASES:
        arrays[f"spec:train:{case.id}"] = np.array(case.torch_spec())
        arrays[f"train:{case.id}:params"], arrays[f"train:{case.id}:norms"] = torch_train(case)
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    runs = sum(len(case.runs()) for case in TREE_CASES)
    print(
        f"wrote {GOLDEN_PATH} ({len(TREE_CASES)} trees, {runs} clips, {len(TRAIN_CASES)} "
        f"training runs, {size_kib:.0f} KiB)"
    )


if __name__ == "__main__":
    main()
