"""Prometheus remote write 1.0 on the wire: hand-written protobuf encoding plus snappy block compression.

The messages (``prompb``)::

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }

Encoding is on the hot path, so it is written by hand: a series' label bytes are computed once (by the
scrape cache) and each sample adds a fixed 9-byte double and a varint timestamp. Decoding is not on the
hot path and uses the ``protobuf`` library, which makes it an independent check of the encoder; the library
is imported on the first decode (``--test``, the receiver, tests), not by every agent (22 ms of import).
"""

from __future__ import annotations

import functools
import struct
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

import cramjam

from kubescrape import __version__

__all__ = [
    "REMOTE_WRITE_HEADERS",
    "STALE_NAN",
    "STALE_NAN_BITS",
    "STALE_NAN_BYTES",
    "clear_label_cache",
    "compress",
    "decode_write_request",
    "decompress",
    "encode_labels",
    "encode_timeseries",
    "is_stale_nan",
    "snappy_concat",
    "varint",
]

STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus' staleness marker: a signalling NaN with this exact bit pattern."""
STALE_NAN_BYTES = STALE_NAN_BITS.to_bytes(8, "little")
STALE_NAN: float = struct.unpack("<d", STALE_NAN_BYTES)[0]
"""The staleness marker as a float. Only copy it (no arithmetic), or the CPU may quiet the NaN."""

_MASK64 = (1 << 64) - 1
_pack_double = struct.Struct("<d").pack
_SMALL_VARINTS = [bytes((n,)) for n in range(128)]
_EMPTY_NAME = ("__name__", "")


REMOTE_WRITE_HEADERS: dict[str, str] = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": f"kubescrape/{__version__}",
}


def is_stale_nan(value: float) -> bool:
    """True when ``value`` carries the exact staleness-marker bit pattern."""
    return _pack_double(value) == STALE_NAN_BYTES


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of ``n``; negative numbers as their 64-bit two's complement (10 bytes)."""
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if 0 < n < 0x4000:  # lengths of labels and series
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    n &= _MASK64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_bytes(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


# Encoded ``labels`` fields by (name, value). Label pairs repeat a lot across series (namespace, image,
# job, instance ...), so encoding a new series mostly joins cached bytes. Bounded; cleared when full.
_LABEL_FIELDS: dict[tuple[str, str], bytes] = {}
_LABEL_FIELDS_MAX = 1 << 16


def _label_field(pair: tuple[str, str]) -> bytes:
    name, value = pair
    label = _field_bytes(b"\x0a", name.encode()) + _field_bytes(b"\x12", value.encode()) if value else b""
    field = _field_bytes(b"\x0a", label) if label else b""
    if len(_LABEL_FIELDS) >= _LABEL_FIELDS_MAX:
        _LABEL_FIELDS.clear()
    _LABEL_FIELDS[pair] = field
    return field


def clear_label_cache() -> None:
    """Forget the cached label field encodings (benchmarks of a cold start; memory)."""
    _LABEL_FIELDS.clear()


def encode_labels(labels: Iterable[tuple[str, str]]) -> bytes:
    """Encode the ``labels`` fields of a ``TimeSeries``, sorted by name as remote write requires.

    ``labels`` must contain ``__name__``. Labels with an empty value are left out: Prometheus treats an
    empty label the same as a missing one.
    """
    pairs = sorted(labels)
    get = _LABEL_FIELDS.get
    encoded = b"".join([get(pair) or _label_field(pair) for pair in pairs])
    # Sorted, so a ("__name__", "") pair comes before any other __name__ pair.
    first = bisect_right(pairs, _EMPTY_NAME)
    if first == len(pairs) or pairs[first][0] != "__name__":
        raise ValueError("a remote-write series needs a non-empty __name__ label")
    return encoded


def sample_head(label_bytes: bytes, timestamp_len: int) -> bytes:
    """Everything of one ``timeseries`` field before the 8 value bytes, for a timestamp varint of
    ``timestamp_len`` bytes: tag, length, labels, samples tag and length, value tag.

    The scrape cache stores this per series so a sample costs ``head + double + 0x10 + varint(ts)``.
    """
    sample_len = 1 + 8 + 1 + timestamp_len
    series_len = len(label_bytes) + 2 + sample_len
    return b"\x0a" + varint(series_len) + label_bytes + b"\x12" + _SMALL_VARINTS[sample_len] + b"\x09"


def encode_timeseries(label_bytes: bytes, value: float, timestamp_ms: int) -> bytes:
    """One complete ``WriteRequest.timeseries`` field holding a single sample."""
    ts = varint(timestamp_ms)
    return sample_head(label_bytes, len(ts)) + _pack_double(value) + b"\x10" + ts


def compress(body: bytes) -> bytes:
    """Snappy block format (not framed), as remote write requires."""
    return bytes(cramjam.snappy.compress_raw(body))


def decompress(data: bytes) -> bytes:
    """Inverse of :func:`compress`; raises ``cramjam.DecompressionError`` on garbage."""
    return bytes(cramjam.snappy.decompress_raw(data))


def snappy_concat(blocks: Sequence[bytes]) -> bytes:
    """One snappy block that decompresses to the concatenation of what ``blocks`` decompress to.

    A snappy block is the varint of its decompressed length followed by literal and copy elements;
    a copy points backwards into the block's own output, so the elements of several blocks in a row
    decode to their outputs in a row: only the length header is rewritten, nothing is recompressed.
    """
    if len(blocks) == 1:
        return blocks[0]
    total = 0
    bodies: list[bytes | memoryview] = []
    for b in blocks:
        n, pos = _uvarint_at(b)
        total += n
        bodies.append(memoryview(b)[pos:])
    return b"".join([varint(total), *bodies])


def _uvarint_at(data: bytes) -> tuple[int, int]:
    """(value, end) of the varint at the start of ``data``; ValueError if it is cut short."""
    result = shift = 0
    for i, b in enumerate(data[:10]):
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i + 1
        shift += 7
    raise ValueError("snappy block without a complete length header")


@functools.cache
def _build_messages() -> dict[str, Any]:
    """Build the prompb message classes from a descriptor (there is no protoc at build time)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="kubescrape_prompb.proto", package="prometheus", syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto

    def message(name: str, *fields: tuple[str, int, int, str | None, int]) -> None:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name, label in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    message("Label", ("name", 1, field.TYPE_STRING, None, opt), ("value", 2, field.TYPE_STRING, None, opt))
    message(
        "Sample", ("value", 1, field.TYPE_DOUBLE, None, opt), ("timestamp", 2, field.TYPE_INT64, None, opt)
    )
    message(
        "TimeSeries",
        ("labels", 1, field.TYPE_MESSAGE, ".prometheus.Label", rep),
        ("samples", 2, field.TYPE_MESSAGE, ".prometheus.Sample", rep),
    )
    message("WriteRequest", ("timeseries", 1, field.TYPE_MESSAGE, ".prometheus.TimeSeries", rep))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("Label", "Sample", "TimeSeries", "WriteRequest")
    }


def __getattr__(name: str) -> Any:
    # ``WriteRequest``: the protobuf class (for tests and tools, not the hot path), built on first use.
    if name == "WriteRequest":
        return _build_messages()["WriteRequest"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decode_write_request(body: bytes) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    """Decode an uncompressed ``WriteRequest`` with the protobuf library: ``[(labels, [(value, ts)])]``.

    Raises ``google.protobuf.message.DecodeError`` on malformed input.
    """
    request = _build_messages()["WriteRequest"]()
    request.ParseFromString(body)
    return [
        (
            {label.name: label.value for label in series.labels},
            [(sample.value, sample.timestamp) for sample in series.samples],
        )
        for series in request.timeseries
    ]
