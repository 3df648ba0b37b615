from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kubescrape._memory import MMAP_THRESHOLD, TRIM_THRESHOLD, trim_periodically, tune_allocator
from kubescrape.agent import run_command
from kubescrape.config.models import AgentConfig
from tests.e2e.helpers import write_categraf_config

ROOT = Path(__file__).resolve().parent.parent


class FakeMallopt:
    """Records mallopt(param, value) calls; answers ``result``."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result
        self.argtypes: object = None
        self.restype: object = None

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


class FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.mallopt = FakeMallopt(result)
        self.malloc_trim = FakeMallocTrim()


class FakeMallocTrim:
    """Records malloc_trim(pad) calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.argtypes: object = None
        self.restype: object = None

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


def test_fixes_the_mmap_and_trim_thresholds() -> None:
    libc = FakeLibc()
    assert tune_allocator(libc)  # type: ignore[arg-type]
    # M_MMAP_THRESHOLD is -3, M_TRIM_THRESHOLD -1 (malloc.h)
    assert libc.mallopt.calls == [(-3, MMAP_THRESHOLD), (-1, TRIM_THRESHOLD)]


def test_a_refused_setting_is_reported() -> None:
    assert not tune_allocator(FakeLibc(result=0))  # type: ignore[arg-type]


def test_a_c_library_without_mallopt_is_left_alone() -> None:
    assert not tune_allocator(object())  # type: ignore[arg-type]


def test_does_nothing_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_glibc(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")  # what musl/macOS Python raise

    monkeypatch.setattr("kubescrape._memory.os.confstr", no_glibc)
    loaded: list[object] = []
    monkeypatch.setattr("kubescrape._memory.ctypes.CDLL", lambda *a: loaded.append(a))
    assert not tune_allocator()
    assert loaded == []


async def test_the_environment_can_keep_glibcs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESCRAPE_ALLOCATOR", "default")
    loaded: list[object] = []
    monkeypatch.setattr("kubescrape._memory.ctypes.CDLL", lambda *a: loaded.append(a))
    assert not tune_allocator()
    await asyncio.wait_for(trim_periodically(0.01), 5)  # returns at once: nothing to do
    assert loaded == []


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"), reason="glibc only")
def test_buffers_above_the_threshold_are_unmapped_after_a_large_free() -> None:
    """Without the tuning, freeing a 16 MiB mapped block raises glibc's threshold and a later 4 MiB buffer
    comes from the heap; with it, the buffer is mapped (mallinfo2's hblkhd) and returned when freed."""
    script = textwrap.dedent(
        """
        import ctypes, sys
        from kubescrape._memory import tune_allocator

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        if sys.argv[1] == "tuned":
            assert tune_allocator()
        big = bytes(16 << 20)
        del big
        before = libc.mallinfo2().hblkhd
        buf = bytes(4 << 20)
        print(libc.mallinfo2().hblkhd - before >= 4 << 20)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = {
        mode: subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
        for mode in ("default", "tuned")
    }
    assert out == {"default": "False", "tuned": "True"}


def test_run_command_tunes_the_allocator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    applied: list[bool] = []

    async def fake_serve(config: AgentConfig, **kw: object) -> int:
        return 0

    monkeypatch.setattr("kubescrape.agent._serve", fake_serve)
    def tune() -> bool:
        applied.append(True)
        return True

    monkeypatch.setattr("kubescrape.agent.tune_allocator", tune)
    write_categraf_config(tmp_path, writer_url="http://127.0.0.1:9/api/v1/write",
                          urls={"http://127.0.0.1:10249/metrics": "http://127.0.0.1:9/metrics"})
    code = run_command(config_dir=tmp_path, writer_urls=[], test=False, listen="",
                       spool_dir=tmp_path / "spool", spool_max_bytes=1 << 20, spool=False,
                       shutdown_timeout=1.0, log_level="warning")
    assert code == 0
    assert applied == [True]


async def test_trims_the_heaps_every_period_until_cancelled() -> None:
    libc = FakeLibc()
    task = asyncio.create_task(trim_periodically(0.01, libc))  # type: ignore[arg-type]

    async def three_trims() -> None:
        while len(libc.malloc_trim.calls) < 3 and not task.done():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(three_trims(), 30)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(libc.malloc_trim.calls) == {0}  # malloc_trim(0): release every free page, keep no pad


async def test_trimming_without_malloc_trim_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    await asyncio.wait_for(trim_periodically(0.01, object()), 5)  # type: ignore[arg-type]
    monkeypatch.setattr("kubescrape._memory.os.confstr", lambda name: None)  # no glibc here
    await asyncio.wait_for(trim_periodically(0.01), 5)


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"), reason="glibc only")
async def test_trimming_the_real_heap_runs() -> None:
    task = asyncio.create_task(trim_periodically(0.001))
    await asyncio.sleep(0.05)
    assert not task.done()  # still trimming: malloc_trim was found and called without error
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
