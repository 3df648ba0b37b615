"""How to deliver to one remote-write backend: plain values, resolved once from the configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WriterSettings:
    """One remote-write backend and how to deliver to it.

    ``batch`` is the maximum number of samples per request; ``queue_capacity`` is the in-memory
    backlog limit in *samples* (unsent + in flight), used only without the spool. ``max_retries`` is
    how many times a retryable failure is retried before the batch is dropped (``-1``: forever).
    """

    url: str
    name: str
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth: tuple[str, str] | None = None
    timeout: float = 5.0
    dial_timeout: float = 2.5
    batch: int = 2000
    queue_capacity: int = 10000
    min_shards: int = 1
    max_shards: int = 4
    max_backoff: float = 30.0
    min_backoff: float = 0.1
    flush_deadline: float = 1.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None  # TLS server name to verify instead of the URL's host
    max_retries: int = -1
