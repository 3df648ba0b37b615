"""The hand-written remote-write encoder against the protobuf library, and snappy through cramjam."""

from __future__ import annotations

import math
import struct

import cramjam
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.remote_write.encode import (
    REMOTE_WRITE_HEADERS,
    STALE_NAN,
    STALE_NAN_BITS,
    STALE_NAN_BYTES,
    WriteRequest,
    clear_label_cache,
    compress,
    decode_write_request,
    decompress,
    encode_labels,
    encode_timeseries,
    is_stale_nan,
    varint,
)


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def _library_encoding(labels: dict[str, str], value: float, timestamp: int) -> bytes:
    request = WriteRequest()
    series = request.timeseries.add()
    for name in sorted(labels):
        series.labels.add(name=name, value=labels[name])
    series.samples.add(value=value, timestamp=timestamp)
    return bytes(request.SerializeToString())


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (1_700_000_000_000, b"\x80\xd0\x95\xff\xbc\x31"),
        (-1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint(n: int, expected: bytes) -> None:
    assert varint(n) == expected


def test_labels_sorted_and_empty_values_left_out() -> None:
    encoded = encode_labels([("zone", "a"), ("__name__", "up"), ("empty", ""), ("job", "k")])
    timeseries = encode_timeseries(encoded, 1.0, 5)
    assert decode_write_request(timeseries) == [({"__name__": "up", "job": "k", "zone": "a"}, [(1.0, 5)])]
    # Exactly what the protobuf library writes for the same message (labels in sorted order).
    assert timeseries == _library_encoding({"__name__": "up", "job": "k", "zone": "a"}, 1.0, 5)


def test_label_cache_does_not_change_bytes() -> None:
    labels = [("__name__", "m"), ("pod", "p-1"), ("namespace", "default")]
    cached = encode_labels(labels)
    clear_label_cache()
    assert encode_labels(labels) == cached == encode_labels(reversed(labels))


def test_labels_need_a_metric_name() -> None:
    with pytest.raises(ValueError, match="__name__"):
        encode_labels([("job", "k")])
    with pytest.raises(ValueError, match="__name__"):
        encode_labels([("__name__", ""), ("job", "k")])


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.5, -2.25e-300, 1.7976931348623157e308, 5e-324, math.inf, -math.inf, math.nan],
)
@pytest.mark.parametrize("timestamp", [0, 1, 1_764_000_000_000, -1, -1_764_000_000_000, 2**63 - 1, -(2**63)])
def test_special_values_and_timestamps_match_protobuf(value: float, timestamp: int) -> None:
    labels = {"__name__": "m", "a": "b"}
    ours = encode_timeseries(encode_labels(labels.items()), value, timestamp)
    [(decoded_labels, [(decoded_value, decoded_ts)])] = decode_write_request(ours)
    assert decoded_labels == labels
    assert decoded_ts == timestamp
    assert _bits(decoded_value) == _bits(value)
    if value != 0.0:
        # The library leaves out zero-valued fields; otherwise the bytes are identical.
        assert ours == _library_encoding(labels, value, timestamp) or timestamp == 0


def test_stale_nan_is_bit_exact() -> None:
    assert _bits(STALE_NAN) == STALE_NAN_BITS == 0x7FF0000000000002
    assert is_stale_nan(STALE_NAN)
    assert not is_stale_nan(math.nan)
    ours = encode_timeseries(encode_labels([("__name__", "m")]), STALE_NAN, 1_764_000_000_000)
    assert STALE_NAN_BYTES in ours
    [(_, [(value, _)])] = decode_write_request(ours)
    assert _bits(value) == STALE_NAN_BITS


def test_unicode_label_values() -> None:
    labels = {"__name__": "m", "pod": "日本語-ü-🙂", "quote": '"\\\n'}
    ours = encode_timeseries(encode_labels(labels.items()), 2.0, 7)
    assert decode_write_request(ours) == [(labels, [(2.0, 7)])]
    assert ours == _library_encoding(labels, 2.0, 7)


def test_concatenated_timeseries_are_one_write_request() -> None:
    a = encode_timeseries(encode_labels([("__name__", "a")]), 1.0, 10)
    b = encode_timeseries(encode_labels([("__name__", "b"), ("x", "y")]), 2.0, 20)
    assert decode_write_request(a + b) == [
        ({"__name__": "a"}, [(1.0, 10)]),
        ({"__name__": "b", "x": "y"}, [(2.0, 20)]),
    ]


def test_long_label_set_uses_multibyte_lengths() -> None:
    labels = {"__name__": "m", "id": "x" * 300}
    ours = encode_timeseries(encode_labels(labels.items()), 3.0, 9)
    assert ours == _library_encoding(labels, 3.0, 9)


label_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), label_text.filter(bool), max_size=6),
    st.text("abcdefgh_:", min_size=1, max_size=10),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_encoder_matches_protobuf_library(labels: dict[str, str], name: str, value: float, ts: int) -> None:
    labels = {**labels, "__name__": name}
    ours = encode_timeseries(encode_labels(labels.items()), value, ts)
    [(decoded_labels, [(decoded_value, decoded_ts)])] = decode_write_request(ours)
    assert decoded_labels == labels
    assert _bits(decoded_value) == _bits(value)
    assert decoded_ts == ts


def test_snappy_round_trip_is_block_format() -> None:
    body = b"".join(
        encode_timeseries(encode_labels([("__name__", "m"), ("i", str(i))]), float(i), 1_764_000_000_000 + i)
        for i in range(500)
    )
    compressed = compress(body)
    assert len(compressed) < len(body)
    assert decompress(compressed) == body
    # Block format, readable by any snappy block decoder, not the framed stream format.
    assert bytes(cramjam.snappy.decompress_raw(compressed)) == body
    assert not compressed.startswith(b"\xff\x06\x00\x00sNaPpY")


def test_decompress_garbage_raises() -> None:
    with pytest.raises(cramjam.DecompressionError):
        decompress(b"\xff\xff\xff\xff\xff garbage")


def test_decode_garbage_raises() -> None:
    with pytest.raises(DecodeError):
        decode_write_request(b"\x0a\xff\xff\xff\x0f")


def test_headers() -> None:
    assert REMOTE_WRITE_HEADERS["Content-Encoding"] == "snappy"
    assert REMOTE_WRITE_HEADERS["Content-Type"] == "application/x-protobuf"
    assert REMOTE_WRITE_HEADERS["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert REMOTE_WRITE_HEADERS["User-Agent"].startswith("kubescrape/")
