"""The status pages and /api/v1/targets of a real agent, compared with a real Prometheus scraping the same
three static targets (up, 401, refused); and no configured secret on any page or API answer."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kubescrape.prometheus import prometheus_available
from tests.e2e.status_scene import (
    INTERVAL,
    SECRETS,
    Scene,
    get,
    prometheus_targets,
    status_scene,
    wait_scraped,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGES = ["/", "/targets", "/targets?state=unhealthy", "/targets?q=refused", "/service-discovery", "/writers",
         "/config", "/api/v1/targets", "/api/v1/targets?state=dropped", "/api/v1/targets?state=active",
         "/api/v1/targets?scrapePool=relabeled", "/healthz", "/metrics"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scene]:
    if not prometheus_available():
        pytest.fail("the Debian package 'prometheus' is not installed: run `bash scripts/test`")
    async with status_scene(tmp_path_factory.mktemp("status")) as s:
        await wait_scraped(s)
        yield s


async def api(scene: Scene, query: str = "") -> Any:
    async with aiohttp.ClientSession() as session:
        status, text = await get(session, scene.url("/api/v1/targets" + query))
    assert status == 200
    return json.loads(text)


def by_job(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["labels"]["job"]: t for t in targets}


def types_of(value: Any) -> Any:
    """The JSON shape of a value: dicts by key, everything else by type name (int and float are numbers,
    as in JSON)."""
    if isinstance(value, dict):
        return {k: types_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [types_of(v) for v in value[:1]]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


async def test_targets_api_matches_prometheus(scene: Scene) -> None:
    ours = await api(scene, "?state=active")
    prom = await asyncio.to_thread(prometheus_targets, scene.prometheus, state="active")
    assert ours["status"] == prom["status"] == "success"
    assert set(ours["data"]) == set(prom["data"]) == {"activeTargets", "droppedTargets"}
    mine, theirs = by_job(ours["data"]["activeTargets"]), by_job(prom["data"]["activeTargets"])
    assert set(theirs) == {"up", "unauthorized", "refused"}
    assert set(theirs) <= set(mine)
    for job, expected in theirs.items():
        got = mine[job]
        # Same keys and value types; vmagent's lastSamplesScraped is the one addition.
        assert set(got) == set(expected) | {"lastSamplesScraped"}, job
        shape = types_of(got)
        del shape["lastSamplesScraped"]
        for labels in ("discoveredLabels", "labels"):  # label sets differ in content, not in type
            assert set(shape.pop(labels).values()) == {"str"} == set(types_of(expected[labels]).values())
        expected_shape = types_of(expected)
        del expected_shape["discoveredLabels"], expected_shape["labels"]
        assert shape == expected_shape, job
        assert got["health"] == expected["health"], (job, got["lastError"], expected["lastError"])
        assert got["scrapePool"] == expected["scrapePool"] == job
        assert got["scrapeInterval"] == expected["scrapeInterval"] == f"{INTERVAL}s"
        assert got["scrapeTimeout"] == expected["scrapeTimeout"] == f"{INTERVAL}s"
        assert RFC3339.match(got["lastScrape"]) and RFC3339.match(expected["lastScrape"])
        assert got["discoveredLabels"]["__address__"] == expected["discoveredLabels"]["__address__"]
        assert got["scrapeUrl"] == expected["scrapeUrl"]
        assert got["globalUrl"] == got["scrapeUrl"].replace("127.0.0.1", "node-a")
    # Equivalent errors: both say the same thing, kubescrape adds the fix.
    assert mine["up"]["lastError"] == theirs["up"]["lastError"] == ""
    assert "401 Unauthorized" in theirs["unauthorized"]["lastError"]
    assert "401 Unauthorized" in mine["unauthorized"]["lastError"]
    assert "fix:" in mine["unauthorized"]["lastError"]
    assert "connection refused" in theirs["refused"]["lastError"]
    assert re.search(r"connection to 127\.0\.0\.1:\d+ refused", mine["refused"]["lastError"])
    assert mine["up"]["lastSamplesScraped"] == 3
    assert mine["refused"]["lastSamplesScraped"] == 0


async def test_targets_api_parameters(scene: Scene) -> None:
    everything = await api(scene)
    assert len(everything["data"]["activeTargets"]) == 4
    dropped = everything["data"]["droppedTargets"]
    assert [d["discoveredLabels"]["__metrics_path__"] for d in dropped] == ["/internal/metrics"]
    assert set(dropped[0]) == {"discoveredLabels"}
    only_dropped = await api(scene, "?state=dropped")
    assert only_dropped["data"] == {"activeTargets": [], "droppedTargets": dropped}
    only_active = await api(scene, "?state=active")
    assert only_active["data"]["droppedTargets"] == []
    pool = await api(scene, "?scrapePool=relabeled")
    active = pool["data"]["activeTargets"]
    assert [t["scrapePool"] for t in active] == ["relabeled"]
    assert active[0]["labels"]["env"] == "prod" and active[0]["labels"]["debug"] == "1"
    assert pool["data"]["droppedTargets"] == dropped
    unknown = await api(scene, "?state=bogus")  # as Prometheus: an unknown state selects nothing
    assert unknown["data"] == {"activeTargets": [], "droppedTargets": []}
    prom_unknown = await asyncio.to_thread(prometheus_targets, scene.prometheus, state="bogus")
    assert prom_unknown["data"] == unknown["data"]


async def test_no_secret_on_any_page(scene: Scene) -> None:
    async with aiohttp.ClientSession() as session:
        _, sd = await get(session, scene.url("/service-discovery"))
        relabel_pages = sorted(set(re.findall(r'href="(/targets/[0-9a-f]+/relabel)"', sd)))
        assert len(relabel_pages) == 5, sd
        for path in PAGES + relabel_pages:
            status, text = await get(session, scene.url(path))
            # /healthz is 503 while a writer cannot deliver: the scene has one that is down
            assert status == (503 if path == "/healthz" else 200), path
            for name, secret in SECRETS.items():
                assert secret not in text, f"{name} shown on {path}"
                assert secret.split()[-1] not in text, f"{name} shown on {path}"
        _, config = await get(session, scene.url("/config"))
    assert config.count("&lt;secret&gt;") >= 5
    assert "X-Scope-OrgID: tenant-1" in config  # not a credential: shown
    assert "bearer_token_file:" in config  # the path is shown, never the file's content


async def test_pages_are_read_only(scene: Scene) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/targets", "/api/v1/targets", "/config", "/writers"):
            async with session.post(scene.url(path), data=b"x") as r:
                assert r.status == 405, path
