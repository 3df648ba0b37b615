"""Pure helpers of the agent benchmark: percentiles, histograms and the agents' own ``/metrics`` text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Samples of a text exposition by sample name (``x_bucket``, ``x_total`` … as written)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: cumulative ``{le: count}`` → q-quantile, linear within a bucket.

    A quantile that falls in the +Inf bucket is the upper bound of the last finite bucket, as in Prometheus.
    """
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return float("nan")
    total = items[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def parse_exposition(text: str) -> Samples:
    """Samples of a text exposition, by sample name."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def metric_sum(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str,
               where: Mapping[str, str] | None = None) -> float:
    """Sum of one metric's samples over all label sets (optionally only those matching ``where``)."""
    total = 0.0
    for labels, value in samples.get(name, []):
        if where is None or all(labels.get(k) == v for k, v in where.items()):
            total += value
    return total


def histogram_buckets(
    samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str
) -> dict[float, float]:
    """Cumulative buckets of histogram ``name`` summed over every label set except ``le``."""
    out: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Per-bucket increase between two readings of the same cumulative histogram."""
    return {le: count - before.get(le, 0.0) for le, count in after.items()}
