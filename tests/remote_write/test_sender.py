from __future__ import annotations

import email.utils
import random

import pytest

from kubescrape.errors import RemoteWriteError
from kubescrape.remote_write.queue import WriterSettings
from kubescrape.remote_write.sender import Backoff, Sender, parse_retry_after
from kubescrape.selfmon import SelfMetrics
from kubescrape.testing import FakeClock
from tests.e2e.prom import free_port
from tests.remote_write.receiver import Receiver, chunk_bytes, running_receiver


def value(m: SelfMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("", None), (None, None), ("soon", None),
    (email.utils.formatdate(1_700_000_030, usegmt=True), 30.0), ("99999999", 900.0),
])
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1_700_000_000.0) == expected


def test_backoff_doubles_with_jitter_and_caps() -> None:
    b = Backoff(0.1, 1.0, random.Random(1))
    delays = [b.next() for _ in range(7)]
    for d, nominal in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0], strict=True):
        assert nominal * 0.5 <= d <= nominal
    b.reset()
    assert b.next() <= 0.1


def settings(url: str, **kw: object) -> WriterSettings:
    return WriterSettings(url=url, name="w", **kw)  # type: ignore[arg-type]


async def test_posts_remote_write_headers_and_snappy_protobuf() -> None:
    m = SelfMetrics()
    async with running_receiver() as rec:
        s = Sender(settings(rec.url, headers=(("X-Scope-OrgID", "t1"),), basic_auth=("u", "p")), metrics=m)
        body = chunk_bytes("up", [(1.0, 1000), (0.0, 2000)], job="k")
        assert (await s.deliver(body, 2)).accepted
        await s.close()
    h = rec.headers[0]
    assert h["Content-Encoding"] == "snappy"
    assert h["Content-Type"] == "application/x-protobuf"
    assert h["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert h["X-Scope-OrgID"] == "t1"
    assert h["Authorization"].startswith("Basic ")
    assert rec.samples() == [("__name__=up,job=k", 1.0, 1000), ("__name__=up,job=k", 0.0, 2000)]


async def test_5xx_retried_with_exponential_backoff() -> None:
    m = SelfMetrics()
    clock = FakeClock()
    rec = Receiver(script=[(500, {}, "boom"), (502, {}, "bad gw"), (500, {}, "boom")])
    async with running_receiver(rec):
        s = Sender(settings(rec.url, min_backoff=1.0, max_backoff=3.0), metrics=m, clock=clock,
                   rng=random.Random(0))
        assert await s.deliver(chunk_bytes("a", [(1.0, 1)]), 1)
        await s.close()
    assert rec.requests == 4
    assert len(clock.slept) == 3
    for d, nominal in zip(clock.slept, [1.0, 2.0, 3.0], strict=True):
        assert nominal * 0.5 <= d <= nominal
    assert value(m, "kubescrape_samples_failed_total", writer="w") == 3
    assert value(m, "kubescrape_samples_retried_total", writer="w") == 3
    assert s.counters.failing_since is None and s.last_error == "", "the success ended the failure streak"


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(status: int) -> None:
    m = SelfMetrics()
    clock = FakeClock()
    date = email.utils.formatdate(clock.time() + 12, usegmt=True)
    rec = Receiver(script=[(status, {"Retry-After": "7"}, "slow down"), (status, {"Retry-After": date}, "")])
    async with running_receiver(rec):
        s = Sender(settings(rec.url), metrics=m, clock=clock)
        assert await s.deliver(chunk_bytes("a", [(1.0, 1)]), 1)
        await s.close()
    assert clock.slept[0] == 7.0
    # the date was 12 s ahead when written; 7 s have passed on the clock since
    assert 4.0 <= clock.slept[1] <= 5.0


async def test_retry_after_ignored_on_500() -> None:
    clock = FakeClock()
    rec = Receiver(script=[(500, {"Retry-After": "60"}, "")])
    async with running_receiver(rec):
        s = Sender(settings(rec.url, min_backoff=0.5), metrics=SelfMetrics(), clock=clock)
        assert await s.deliver(chunk_bytes("a", [(1.0, 1)]), 1)
        await s.close()
    assert clock.slept and clock.slept[0] <= 0.5


async def test_400_is_given_up_at_once_with_the_first_line_of_the_answer() -> None:
    m = SelfMetrics()
    clock = FakeClock()
    rec = Receiver(script=[(400, {}, "out of order sample\nsecond line")])
    async with running_receiver(rec):
        s = Sender(settings(rec.url), metrics=m, clock=clock)
        outcome = await s.deliver(chunk_bytes("a", [(1.0, 1), (2.0, 2)]), 2)
        await s.close()
    assert not outcome and outcome.reason == "http_400" and outcome.status == 400
    assert "out of order sample" in outcome.error and "second line" not in outcome.error
    assert rec.requests == 1 and clock.slept == []
    assert value(m, "kubescrape_samples_failed_total", writer="w") == 2
    assert s.counters.failing_since is None, "a refused batch does not mean the backend cannot be reached"


async def test_max_retries_gives_up_after_that_many_retries() -> None:
    clock = FakeClock()
    rec = Receiver(script=[(500, {}, "boom")] * 10)
    async with running_receiver(rec):
        s = Sender(settings(rec.url, max_retries=2, min_backoff=0.5), metrics=SelfMetrics(), clock=clock)
        outcome = await s.deliver(chunk_bytes("a", [(1.0, 1)]), 1)
        await s.close()
    assert outcome.reason == "retries_exhausted" and outcome.status == 500
    assert rec.requests == 3 and len(clock.slept) == 2


@pytest.mark.parametrize(("minimum", "maximum"), [(0.0, 0.0), (-5.0, 1.0), (float("nan"), 2.0), (1.0, -1.0)])
def test_backoff_never_waits_zero_or_less(minimum: float, maximum: float) -> None:
    b = Backoff(minimum, maximum, random.Random(3))
    assert all(d > 0 for d in (b.next() for _ in range(100)))


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_names_the_fix(status: int) -> None:
    rec = Receiver(script=[(status, {}, "invalid token")])
    async with running_receiver(rec):
        s = Sender(settings(rec.url), metrics=SelfMetrics(), clock=FakeClock())
        with pytest.raises(RemoteWriteError) as ei:
            await s.send_once(b"", 0)
        await s.close()
    err = ei.value
    assert not err.retryable and err.status == status
    assert "basic_auth" in str(err) and "token" in str(err)


async def test_connection_refused_is_retryable() -> None:
    s = Sender(settings(f"http://127.0.0.1:{free_port()}/api/v1/write", dial_timeout=1.0),
               metrics=SelfMetrics(), clock=FakeClock())
    with pytest.raises(RemoteWriteError) as ei:
        await s.send_once(b"x", 1)
    await s.close()
    assert ei.value.retryable and ei.value.status == 0
    assert "refused" in str(ei.value)


async def test_slow_backend_times_out_as_retryable() -> None:
    rec = Receiver(delay=1.0)
    async with running_receiver(rec):
        s = Sender(settings(rec.url, timeout=0.2), metrics=SelfMetrics())
        with pytest.raises(RemoteWriteError) as ei:
            await s.send_once(b"", 0)
        await s.close()
    assert ei.value.retryable
