"""Do the agents deliver the same series? Set comparison of what each agent wrote into the receiver.

Series are compared as multisets of label sets after setting aside labels an agent adds by design
(``bench_agent``, ``agent_hostname``) and label names only one side uses at all (both listed); metric names
only one side delivered are listed apart. ``compare_all`` compares every pair of agents of a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

AGENT_LABEL = "bench_agent"
# Labels one agent adds by design and the others do not: never part of the equivalence check.
AGENT_SPECIFIC_LABELS = frozenset({AGENT_LABEL, "agent_hostname"})
# Series a Prometheus-style scraper synthesises for every scrape (the target does not expose them). The
# last two are Prometheus' `extra-scrape-metrics` feature (off by default), which vmagent always adds.
SCRAPE_SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "scrape_timeout_seconds",
        "scrape_sample_limit",
    }
)

SeriesKey = tuple[tuple[str, str], ...]


@dataclass
class SeriesDiff:
    """How two delivered series sets differ once agent-specific labels are set aside."""

    a: str
    b: str
    count_a: int
    count_b: int
    ignored_labels: list[str]
    labels_only_a: list[str]
    labels_only_b: list[str]
    names_only_a: list[str]
    names_only_b: list[str]
    only_a: list[SeriesKey] = field(default_factory=list)
    only_b: list[SeriesKey] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """Nothing differs."""
        return not (self.names_only_a or self.names_only_b or self.only_a or self.only_b)

    @property
    def same_target_series(self) -> bool:
        """Only whole synthetic per-scrape metric names differ: the target's series are the same."""
        names = (*self.names_only_a, *self.names_only_b)
        return not (self.only_a or self.only_b) and all(n in SCRAPE_SYNTHETIC for n in names)


def compare_series_sets(
    a_name: str,
    a: Iterable[Mapping[str, str]],
    b_name: str,
    b: Iterable[Mapping[str, str]],
    ignore: Iterable[str] = AGENT_SPECIFIC_LABELS,
) -> SeriesDiff:
    """Compare two series sets (each a list of label maps with ``__name__``).

    Labels in ``ignore``, and label names that only one side uses at all, are dropped before comparing (and
    listed). Metric names only one side delivered are listed apart and not compared series by series. The
    comparison is of multisets, so two series that collapse into one after dropping labels still show.
    """
    a_list, b_list = list(a), list(b)
    ignored = set(ignore)
    names_a = {k for s in a_list for k in s} - ignored
    names_b = {k for s in b_list for k in s} - ignored
    only_labels_a, only_labels_b = sorted(names_a - names_b), sorted(names_b - names_a)
    drop = ignored | set(only_labels_a) | set(only_labels_b)

    def key(s: Mapping[str, str]) -> SeriesKey:
        return tuple(sorted((k, v) for k, v in s.items() if k not in drop))

    metric_a = {s.get("__name__", "") for s in a_list}
    metric_b = {s.get("__name__", "") for s in b_list}
    common = metric_a & metric_b
    count_a = Counter(key(s) for s in a_list if s.get("__name__", "") in common)
    count_b = Counter(key(s) for s in b_list if s.get("__name__", "") in common)
    return SeriesDiff(
        a=a_name,
        b=b_name,
        count_a=len(a_list),
        count_b=len(b_list),
        ignored_labels=sorted(ignored),
        labels_only_a=only_labels_a,
        labels_only_b=only_labels_b,
        names_only_a=sorted(metric_a - metric_b),
        names_only_b=sorted(metric_b - metric_a),
        only_a=sorted((count_a - count_b).elements()),
        only_b=sorted((count_b - count_a).elements()),
    )


def render_series_key(key: SeriesKey) -> str:
    labels = dict(key)
    name = labels.pop("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _name_list(names: Sequence[str], limit: int = 12) -> str:
    """Names for a report line; ``*`` marks the series a scraper synthesises for every scrape."""
    if not names:
        return "none"
    shown = [n + ("*" if n in SCRAPE_SYNTHETIC else "") for n in names[:limit]]
    return ", ".join(shown) + (" …" if len(names) > limit else "")


def render_diff(diff: SeriesDiff, examples: int = 5) -> str:
    """Markdown summary of a series-set comparison."""
    lines = [
        f"Series delivered: {diff.a} {diff.count_a}, {diff.b} {diff.count_b}. "
        f"Ignored labels: {', '.join(diff.ignored_labels) or 'none'}.",
        f"- labels only {diff.a} adds (dropped before comparing): {', '.join(diff.labels_only_a) or 'none'}",
        f"- labels only {diff.b} adds (dropped before comparing): {', '.join(diff.labels_only_b) or 'none'}",
        f"- metric names only from {diff.a} ({len(diff.names_only_a)}): {_name_list(diff.names_only_a)}",
        f"- metric names only from {diff.b} ({len(diff.names_only_b)}): {_name_list(diff.names_only_b)}",
        f"- series of common names only from {diff.a}: {len(diff.only_a)}; "
        f"only from {diff.b}: {len(diff.only_b)}",
    ]
    for side, keys in ((diff.a, diff.only_a), (diff.b, diff.only_b)):
        if keys:
            by_name = Counter(dict(k).get("__name__", "") for k in keys)
            lines.append(
                f"  - only {side}, by metric name: "
                + ", ".join(f"{n} {c}" for n, c in by_name.most_common(8))
                + (" …" if len(by_name) > 8 else "")
            )
        for k in keys[:examples]:
            lines.append(f"  - only {side}: `{render_series_key(k)}`")
    verdict = _verdict(diff)
    lines.append(f"- verdict: **{verdict}**")
    if any(n in SCRAPE_SYNTHETIC for n in (*diff.names_only_a, *diff.names_only_b)):
        lines.append(
            "- `*`: a series the scraper synthesises for every scrape (the target does not expose it)"
        )
    return "\n".join(lines)


def _verdict(diff: SeriesDiff) -> str:
    if diff.same:
        return "SAME series set"
    if diff.same_target_series:
        return "SAME target series (only synthetic per-scrape series differ)"
    if not diff.only_a and not diff.only_b:
        return "DIFFERENT series sets (only whole metric names differ)"
    return "DIFFERENT series sets"


def compare_all(series: Mapping[str, Sequence[Mapping[str, str]]]) -> list[SeriesDiff]:
    """Compare the delivered series sets of every pair of agents, in the order given."""
    return [compare_series_sets(a, series[a], b, series[b]) for a, b in combinations(series, 2)]


def render_comparison(diffs: Sequence[SeriesDiff]) -> str:
    """Markdown for every pairwise comparison, then one verdict over all of them."""
    if not diffs:
        return ""
    parts = [f"#### {d.a} vs {d.b}\n\n{render_diff(d)}\n" for d in diffs]
    agents = list(dict.fromkeys(n for d in diffs for n in (d.a, d.b)))
    if all(d.same for d in diffs):
        verdict = "the SAME series set"
    elif all(d.same_target_series for d in diffs):
        verdict = "the SAME target series; only synthetic per-scrape series differ (see above)"
    else:
        verdict = "DIFFERENT series sets (see above)"
    parts.append(f"Equivalence over {', '.join(agents)}: **{verdict}**.\n")
    return "\n".join(parts)
