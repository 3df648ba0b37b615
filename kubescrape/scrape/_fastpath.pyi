"""Type stub of the optional C extension ``kubescrape.scrape._fastpath`` (see _fastpath.c)."""

def run(
    data: bytes,
    pos: int,
    predicted: list[tuple[bytes, int, bytes]],
    index: int,
    order: list[tuple[bytes, int, bytes]] | None,
    pieces: list[bytes],
    tails: dict[bytes, bytes],
    default_tail: bytes,
    honor: bool,
    lo: int,
    hi: int,
    /,
) -> tuple[int, int]:
    """Consume the predicted lines from ``pos``; return ``(pos, index)`` of the first line left to the
    Python loop (``pos == len(data)`` when none)."""

def join(pieces: list[bytes], step: int, /) -> list[bytes]:
    """``b"".join`` of each run of ``step`` pieces, without slicing the list."""
