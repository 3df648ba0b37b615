"""The agent's own metrics (prometheus_client, one registry per agent) and its /metrics + /healthz listener.

Every sample the agent touches is counted once where it happens: scraped, appended (entered a writer's
queue or spool), sent (acknowledged by a writer), retried, failed, dropped (with a reason), evicted. Per
writer and per process ``appended = sent + dropped + evicted + pending`` holds at every moment (see
:mod:`kubescrape.remote_write.ledger`).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from kubescrape._aiohttp import web


class SelfMetrics:
    """All self-metrics of one agent instance. Pass ``registry`` to share one; tests make their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # scraping
        self.scrapes = Counter(
            "kubescrape_scrapes_total",
            "Scrapes attempted, by target and result.",
            ["target", "result"],
            registry=r,
        )
        self.scrape_errors = Counter(
            "kubescrape_scrape_errors_total",
            "Failed scrapes by target and reason (connect, tls, http_401, parse …).",
            ["target", "reason"],
            registry=r,
        )
        self.samples_scraped = Counter(
            "kubescrape_samples_scraped_total",
            "Samples parsed from successful scrapes.",
            ["target"],
            registry=r,
        )
        self.scrape_samples_dropped = Counter(
            "kubescrape_scrape_samples_dropped_total",
            "Samples of successful scrapes left out, by target and reason (duplicate, out of bounds …).",
            ["target", "reason"],
            registry=r,
        )
        self.target_up = Gauge(
            "kubescrape_target_up", "1 if the last scrape of the target succeeded.", ["target"], registry=r
        )
        self.scrape_duration = Histogram(
            "kubescrape_scrape_duration_seconds",
            "Scrape duration (request + parse + encode).",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.token_reloads = Counter(
            "kubescrape_token_reloads_total",
            "Bearer token files re-read because they changed or after a 401.",
            ["file"],
            registry=r,
        )
        self.config_warnings = Counter(
            "kubescrape_config_warnings_total", "Warnings raised while loading the configuration.", registry=r
        )
        # delivery
        self.samples_appended = Counter(
            "kubescrape_samples_appended_total",
            "Samples handed to a writer in this process (incl. replayed from its spool at start, and "
            "appends that failed, which are also counted as dropped): appended = sent + dropped + evicted "
            "+ pending.",
            ["writer"],
            registry=r,
        )
        self.samples_replayed = Counter(
            "kubescrape_spool_samples_replayed_total",
            "Samples found unacknowledged in the spool at start (part of appended).",
            ["writer"],
            registry=r,
        )
        self.samples_pending = Gauge(
            "kubescrape_samples_pending",
            "Samples appended but not yet sent, dropped or evicted (queued, spooled or in flight).",
            ["writer"],
            registry=r,
        )
        self.samples_sent = Counter(
            "kubescrape_samples_sent_total",
            "Samples acknowledged by a remote-write backend.",
            ["writer"],
            registry=r,
        )
        self.samples_retried = Counter(
            "kubescrape_samples_retried_total",
            "Samples in batches that were sent again after a retryable failure.",
            ["writer"],
            registry=r,
        )
        self.samples_failed = Counter(
            "kubescrape_samples_failed_total",
            "Samples in send attempts that failed (retryable or not).",
            ["writer"],
            registry=r,
        )
        self.samples_dropped = Counter(
            "kubescrape_samples_dropped_total",
            "Samples given up on, by writer and reason.",
            ["writer", "reason"],
            registry=r,
        )
        self.samples_evicted = Counter(
            "kubescrape_spool_samples_evicted_total",
            "Samples evicted from the spool because it reached its size limit.",
            ["writer"],
            registry=r,
        )
        self.spool_corrupt = Counter(
            "kubescrape_spool_corrupt_records_total",
            "Spool records skipped because they were truncated or failed a checksum.",
            ["writer"],
            registry=r,
        )
        self.spool_bytes = Gauge("kubescrape_spool_bytes", "Bytes held in the spool.", ["writer"], registry=r)
        self.oldest_unsent_age = Gauge(
            "kubescrape_spool_oldest_unsent_age_seconds",
            "Age of the oldest sample not yet acknowledged.",
            ["writer"],
            registry=r,
        )
        self.shards = Gauge(
            "kubescrape_remote_write_shards", "Parallel senders in use.", ["writer"], registry=r
        )
        self.send_duration = Histogram(
            "kubescrape_remote_write_duration_seconds",
            "Duration of remote-write requests.",
            ["writer"],
            registry=r,
        )

        # supervision
        self.task_failures = Counter(
            "kubescrape_task_failures_total",
            "Failures of supervised tasks (each is restarted with backoff), by task.",
            ["task"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def make_app(metrics: SelfMetrics, healthy: Callable[[], tuple[bool, str]] | None = None) -> web.Application:
    """The self-metrics web app: ``/metrics``, ``/healthz`` (503 while ``healthy`` says so: for readiness
    and humans) and ``/livez`` (200 while the event loop answers: for a liveness probe, since restarting
    the agent does not bring a backend back)."""

    async def handle_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(_: web.Request) -> web.Response:
        ok, text = healthy() if healthy is not None else (True, "ok")
        return web.Response(text=text, status=200 if ok else 503)

    async def handle_livez(_: web.Request) -> web.Response:
        return web.Response(text="alive\n")

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/livez", handle_livez)
    return app
