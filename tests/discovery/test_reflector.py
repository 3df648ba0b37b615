"""The reflector's state machine with a scripted API (no network): list, watch, resume, 410 → re-list
with the difference emitted, backoff on errors and on watches that end at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from kubescrape.clock import Backoff
from kubescrape.discovery.apiclient import ApiError, DiscoveryError
from kubescrape.discovery.reflector import Reflector
from kubescrape.testing import FakeClock


def _obj(name: str, rv: int, v: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}, "spec": {"v": v}}


class ScriptedApi:
    """Answers ``get`` and ``watch`` from lists of scripted results (an exception is raised)."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_params: list[dict[str, str]] = []

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        item = self.lists.pop(0)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, dict)
        return item

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.watch_params.append(dict(params))
        if not self.watches:
            raise asyncio.CancelledError  # end of the script: stop the reflector
        item = self.watches.pop(0)
        if isinstance(item, Exception):
            raise item
        for ev in item:
            yield ev


def _doubling(slept: list[float], caps: list[float]) -> bool:
    """Each delay is its cap scaled by the jitter factor in [0.5, 1.0)."""
    return len(slept) == len(caps) and all(c / 2 <= s < c for s, c in zip(slept, caps, strict=True))


def _reflector(api: ScriptedApi, clock: FakeClock, events: list[tuple[str, str]]) -> Reflector:
    return Reflector(api, "/api/v1/pods", lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
                     clock=clock, backoff=Backoff(0.5, 4.0, random.Random(1)))


async def test_list_watch_resume_and_relist_after_410() -> None:
    api = ScriptedApi(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [_obj("a", 5), _obj("b", 6)]},
               {"metadata": {"resourceVersion": "30"}, "items": [_obj("b", 6), _obj("c", 25)]}],
        watches=[
            [{"type": "ADDED", "object": _obj("x", 11)}, {"type": "BOOKMARK",
                                                         "object": {"metadata": {"resourceVersion": "15"}}}],
            [{"type": "DELETED", "object": _obj("x", 16)}],
            [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                          "message": "too old resource version: 16 (20)"}}],
        ])
    events: list[tuple[str, str]] = []
    clock = FakeClock()
    r = _reflector(api, clock, events)
    with pytest.raises(asyncio.CancelledError):
        await r.run()
    assert [p["resourceVersion"] for p in api.watch_params] == ["10", "15", "16", "30"]
    assert all(p["allowWatchBookmarks"] == "true" for p in api.watch_params)
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "x"), ("DELETED", "x"),
                      ("DELETED", "a"), ("ADDED", "c")], "the re-list emits only the difference"
    assert sorted(n for _, n in r.objects) == ["b", "c"] and r.lists == 2


async def test_errors_back_off_exponentially_and_reset_after_a_list() -> None:
    err = ApiError(403, "Forbidden", "pods is forbidden")
    api = ScriptedApi(lists=[err, err, DiscoveryError("refused"), {"metadata": {"resourceVersion": "1"},
                                                                    "items": []}],
                      watches=[[{"type": "ADDED", "object": _obj("a", 2)}]])
    clock = FakeClock()
    r = _reflector(api, clock, [])
    with pytest.raises(asyncio.CancelledError):
        await r.run()
    assert _doubling(clock.slept, [0.5, 1.0, 2.0]), clock.slept
    assert r.errors == 3 and r.backoff.attempt == 0


async def test_a_watch_that_ends_at_once_is_not_retried_in_a_tight_loop() -> None:
    api = ScriptedApi(lists=[{"metadata": {"resourceVersion": "1"}, "items": []}], watches=[[], [], [], []])
    clock = FakeClock()
    r = _reflector(api, clock, [])
    with pytest.raises(asyncio.CancelledError):
        await r.run()
    assert _doubling(clock.slept, [0.5, 1.0, 2.0, 4.0]), clock.slept
