"""Remote write 1.0: encode (protobuf + snappy), queue (the sink), dispatcher (rounds, shards), sender (HTTP,
retries), and the backlogs — memory, spool (durable) — which share one set of books (ledger).

Imports run one way: ``ledger`` ← ``memory``, ``spool``; ``settings`` ← ``sender`` ← ``dispatcher`` ←
``queue``. This module holds only the types every one of them uses.

The unit that flows from a scrape into delivery is a *chunk*: the bytes of one or more
``WriteRequest.timeseries`` fields (tag 1, length-delimited ``TimeSeries``) concatenated, with the number
of samples it holds. Because a ``WriteRequest`` is nothing but its repeated ``timeseries`` field,
concatenating chunks gives a valid ``WriteRequest`` body: batching is ``b"".join``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Chunk(NamedTuple):
    """Encoded ``timeseries`` fields and how many samples they hold.

    ``key`` routes the chunk to a shard: chunks with the same non-zero key (a scrape loop uses one per
    target) are sent by the same shard, in order, so a series' samples never overtake each other without
    the queue having to split chunks into series. ``0`` means "no key": the queue splits such chunks by
    series instead.

    ``snappy`` says ``data`` is those bytes compressed as one snappy block (the spool stores and hands out
    chunks this way, so that a request is assembled from compressed chunks without compressing again).
    """

    data: bytes
    samples: int
    key: int = 0
    snappy: bool = False

    def plain(self) -> bytes:
        """The ``timeseries`` bytes, decompressed if ``data`` is a snappy block."""
        if not self.snappy:
            return self.data
        from kubescrape.remote_write.encode import decompress

        return decompress(self.data)


class Sink(Protocol):
    """Where a scrape loop hands its encoded samples.

    ``append`` returns once the chunks are accepted: durable on disk when the spool is on. It may wait
    (back-pressure) but never drops silently; whatever it cannot accept is counted with a reason.
    """

    async def append(self, chunks: Sequence[Chunk]) -> None: ...
