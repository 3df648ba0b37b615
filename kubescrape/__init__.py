"""kubescrape: scrape the kubelet securely and remote-write to Prometheus-compatible backends."""

from kubescrape.errors import (
    ConfigError,
    KubescrapeError,
    ParseError,
    RemoteWriteError,
    ScrapeError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "KubescrapeError",
    "ParseError",
    "RemoteWriteError",
    "ScrapeError",
    "__version__",
]
