"""Small summaries of latency samples (nanoseconds in, chosen unit out)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(samples_ns: Sequence[int], unit_ns: float) -> dict[str, float]:
    """n, p50, p99 and mean of ``samples_ns``, in units of ``unit_ns`` nanoseconds."""
    values = sorted(s / unit_ns for s in samples_ns)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else math.nan,
    }
