"""Predict a configuration's compile time from smaller ones, to skip those that would take too long.

Compile time is driven by the number of HLO instructions, which grows with the number of leaves,
not their size: the prediction is a power law in the leaf count fitted to the same optimizer and
library's measurements so far (``--max-compile-seconds`` in ``benchmarks.run``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

# A compile is at least linear in the instruction count; fixed costs flatten small-tree slopes.
MIN_SLOPE = 1.0


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted seconds for ``leaves`` leaves, and how they were obtained."""

    seconds: float
    slope: float
    basis: tuple[tuple[int, float], ...]

    def describe(self) -> str:
        points = ", ".join(f"{leaves} leaves: {seconds:.2f} s" for leaves, seconds in self.basis)
        return f"{self.seconds:.1f} s predicted (log-log slope {self.slope:.2f} from {points})"


def predict_seconds(points: Sequence[tuple[int, float]], leaves: int) -> Prediction | None:
    """Extrapolate ``(leaf count, seconds)`` measurements to ``leaves`` leaves.

    Uses the two largest measured leaf counts not above ``leaves`` (or the two largest overall),
    with the log-log slope clamped to at least :data:`MIN_SLOPE`. ``None`` without two distinct
    leaf counts; a measured leaf count is returned as measured.
    """
    by_leaves: dict[int, float] = {}
    for count, seconds in points:
        by_leaves[count] = max(seconds, by_leaves.get(count, 0.0))
    if leaves in by_leaves:
        return Prediction(by_leaves[leaves], 0.0, ((leaves, by_leaves[leaves]),))
    counts = sorted(by_leaves)
    below = [count for count in counts if count < leaves]
    chosen = below[-2:] if len(below) >= 2 else counts[-2:]
    if len(chosen) < 2:
        return None
    (small, t_small), (large, t_large) = ((count, by_leaves[count]) for count in chosen)
    slope = math.log(max(t_large, 1e-9) / max(t_small, 1e-9)) / math.log(large / small)
    slope = max(slope, MIN_SLOPE) if leaves > large else slope
    seconds = t_large * (leaves / large) ** slope
    return Prediction(seconds, slope, ((small, t_small), (large, t_large)))
