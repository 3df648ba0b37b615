"""Self-metrics of discovery, registered on the agent's registry (``SelfMetrics.registry``).

Named after Prometheus' own (``prometheus_sd_kubernetes_events_total``, ``…_failures_total``) so the
same dashboards and alerts carry over: every list, watch event and failure is counted with its role and
reason, and the discovered and scraped target counts are gauges.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["DiscoveryMetrics"]


class DiscoveryMetrics:
    """Counters and gauges of the discoveries and the scrape manager."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.events = Counter("kubescrape_sd_kubernetes_events_total",
                              "Watch and list events handled, by role (node, pod …) and event (add, update, "
                              "delete).", ["role", "event"], registry=r)
        self.lists = Counter("kubescrape_sd_kubernetes_lists_total",
                             "Full lists (the first, and every re-list after 410 Gone), by role.", ["role"],
                             registry=r)
        self.failures = Counter("kubescrape_sd_failures_total",
                                "Discovery requests that failed, by mechanism and reason (http_403, "
                                "discovery …); each is retried with backoff.", ["mechanism", "reason"],
                                registry=r)
        self.targets = Gauge("kubescrape_sd_discovered_targets",
                             "Targets currently scraped by this member, by job.", ["job"], registry=r)
        self.stale_markers = Counter("kubescrape_scrape_stale_markers_total",
                                     "Staleness markers written for targets that disappeared.", registry=r)
