"""The real Prometheus server used by end-to-end tests (see :mod:`kubescrape.prometheus`)."""

from kubescrape.prometheus import (
    PROMETHEUS_BIN,
    Prometheus,
    free_port,
    prometheus_available,
    running_prometheus,
)

__all__ = ["PROMETHEUS_BIN", "Prometheus", "free_port", "prometheus_available", "running_prometheus"]
