"""From discovered target groups to scrape targets: Prometheus' ``PopulateLabels`` (scrape/target.go).

For each discovered label set: add the job's defaults (``job``, ``__scheme__``, ``__metrics_path__``,
``__scrape_interval__``, ``__scrape_timeout__``, ``__param_<name>``) where discovery did not set them,
apply the job's ``relabel_configs`` (a dropped set is no target), require an ``__address__``, default
``instance`` to it, and keep as target labels the ones not starting with ``__``. The scrape URL is
``__scheme__://__address____metrics_path__?__param_*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from kubescrape.relabel import RelabelConfig, relabel

__all__ = ["DiscoveredTarget", "ScrapeSettings", "populate_labels"]


def _duration(seconds: float) -> str:
    """Prometheus' model.Duration text: ``15s``, ``1m``, ``1m30s``, ``500ms``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out


@dataclass(frozen=True)
class ScrapeSettings:
    """What a scrape job adds to its discovered targets."""

    job: str
    scheme: str = "http"
    metrics_path: str = "/metrics"
    interval: float = 60.0
    timeout: float = 10.0
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)
    relabel_configs: Sequence[RelabelConfig] = ()


@dataclass(frozen=True)
class DiscoveredTarget:
    """A target after relabeling: its final labels and the URL to scrape."""

    labels: tuple[tuple[str, str], ...]
    url: str
    discovered: tuple[tuple[str, str], ...]

    @property
    def label_dict(self) -> dict[str, str]:
        """The final target labels."""
        return dict(self.labels)


def populate_labels(discovered: Mapping[str, str], settings: ScrapeSettings) -> DiscoveredTarget | None:
    """The target for one discovered label set, or None when relabeling drops it or it has no address."""
    lb = dict(discovered)
    defaults = {
        "job": settings.job,
        "__scrape_interval__": _duration(settings.interval),
        "__scrape_timeout__": _duration(settings.timeout),
        "__metrics_path__": settings.metrics_path,
        "__scheme__": settings.scheme,
    }
    for name, values in settings.params.items():
        if values:
            defaults[f"__param_{name}"] = values[0]
    for k, v in defaults.items():
        lb.setdefault(k, v)
    pre = tuple(sorted(lb.items()))
    out = relabel(lb, settings.relabel_configs)
    if out is None or not out.get("__address__"):
        return None
    out.setdefault("instance", out["__address__"])
    params = {k[len("__param_"):]: v for k, v in out.items() if k.startswith("__param_")}
    url = f"{out.get('__scheme__', 'http')}://{out['__address__']}{out.get('__metrics_path__', '')}"
    if params:
        url += "?" + urlencode(sorted(params.items()))
    final = tuple(sorted((k, v) for k, v in out.items() if not k.startswith("__")))
    return DiscoveredTarget(final, url, pre)
