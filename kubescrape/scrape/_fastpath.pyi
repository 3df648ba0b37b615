"""Type stub of the optional C extension ``kubescrape.scrape._fastpath`` (see _fastpath.c)."""

def run(
    data: bytes,
    pos: int,
    stop: int,
    keys: list[bytes],
    heads: list[bytes],
    index: int,
    pieces: list[bytes],
    default_tail: bytes,
    honor: bool,
    lo: int,
    hi: int,
    packed: bytearray | None,
    packed_len: int,
    /,
) -> tuple[int, int, int]:
    """Consume the lines of ``data[pos:stop]`` (whole lines) that the previous order (``keys`` and
    their ``heads``, from ``index``) predicts; return ``(pos, index, packed_len)``: the first line left
    to the Python loop (``pos == stop`` when none; the lines consumed are those of ``keys[index:]`` up to
    the returned index) and the packed bytes used. With ``packed`` each kept sample's value and tail
    (15 bytes) go there, at ``packed_len``, instead of three pieces."""

def join_packed(
    heads: list[bytes],
    packed: bytearray,
    index: int,
    stop: int,
    offset: int,
    count: int,
    /,
) -> tuple[bytes, int, int]:
    """The next ``count`` kept samples of ``heads[index:stop]`` (non-empty heads), each its head and
    the 15 packed bytes at ``offset``, as one chunk; with the index and offset where the next starts."""

def join_range(pieces: list[bytes], start: int, stop: int, /) -> bytes:
    """``b"".join(pieces[start:stop])``, without slicing the list."""

def cold_parse(line: bytes, /) -> tuple[str, list[tuple[str, str]], float, int | None, bytes] | None:
    """Split a sample line the compiled code is sure about into ``(name, labels, value, timestamp, key)``
    as :func:`~kubescrape.scrape.parser.parse_sample_line` does; ``key`` is the series text plus the
    blank after it. ``None`` for any other line, which the validating parser then decides."""

def cold_head(labels: object, /) -> bytes | None:
    """``sample_head(encode_labels(labels), 6)``; ``None`` when ``labels`` is not a list of str pairs."""

def plain_labels(
    name: str, scraped: list[tuple[str, str]], target_labels: tuple[tuple[str, str], ...], /
) -> list[tuple[str, str]] | None:
    """What ``make_labeler`` returns for a target without filters, prefixes or rules: the scraped labels
    with a value (no ``__name__``), the target labels and ``__name__``, sorted; ``None`` when a scraped
    label clashes with a target label, a name repeats, or the input is not str pairs."""

def cold_run(
    data: bytes,
    pos: int,
    stop: int,
    target_labels: tuple[tuple[bytes, bytes], ...],
    entries: dict[bytes, bytes],
    new_keys: list[bytes],
    order_keys: list[bytes],
    order_heads: list[bytes],
    pieces: list[bytes],
    tails: dict[bytes, bytes],
    default_tail: bytes,
    honor: bool,
    lo: int,
    hi: int,
    max_pieces: int,
    /,
) -> tuple[int, int]:
    """Consume the lines of new series from ``data[pos:stop]`` for a target whose labeler only adds
    ``target_labels`` (UTF-8 pairs): each one's key and head go into ``entries``, ``new_keys`` and the
    order, its head, value and tail into ``pieces``. Stops, without consuming it, at the first line that
    needs another decision (a comment, non-ASCII text, a line ``cold_parse`` is not sure about, a cached
    series, a clash with a target label, a timestamp outside ``lo..hi`` or without a 6-byte varint, more
    than ``max_pieces`` pieces). Returns the position reached and the samples added."""
