"""The status pages in a real headless Chromium: the targets page renders, the unhealthy filter works with
JavaScript (a click) and without it (the form's query), a failing target shows its error and its fix, the
relabeling page shows the rule that dropped a target. A screenshot of every page is written to
``tmp/status-screenshots/`` at the repository root (ignored by git)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kubescrape.prometheus import prometheus_available
from tests.e2e.chromium import CHROMIUM, Chromium, chromium
from tests.e2e.status_scene import Scene, status_scene, wait_scraped

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(CHROMIUM is None, reason="the Debian package 'chromium' is not installed (CI installs "
                       "it from scripts/apt.d/status.txt: run `bash scripts/install`)"),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "tmp" / "status-screenshots"
PNG = b"\x89PNG\r\n\x1a\n"

VISIBLE_ROWS = ("Array.from(document.querySelectorAll('tr.target')).filter(r => r.offsetParent !== null)"
                ".map(r => r.dataset.health)")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scene]:
    if not prometheus_available():
        pytest.fail("the Debian package 'prometheus' is not installed: run `bash scripts/test`")
    async with status_scene(tmp_path_factory.mktemp("status")) as s:
        await wait_scraped(s)
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chromium]:
    async with chromium(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


async def shot(browser: Chromium, name: str) -> None:
    path = await browser.screenshot(SCREENSHOTS / f"{name}.png")
    assert path.read_bytes().startswith(PNG)


async def visible_health(browser: Chromium) -> list[str]:
    rows = await browser.evaluate(VISIBLE_ROWS)
    assert isinstance(rows, list)
    return [str(r) for r in rows]


async def test_targets_page_renders(scene: Scene, browser: Chromium) -> None:
    await browser.javascript(True)
    await browser.goto(scene.url("/targets"))
    text = await browser.text("main")
    assert "up (1/1 up)" in text
    assert "unauthorized (0/1 up)" in text
    assert "refused (0/1 up)" in text
    assert "relabeled (1/1 up)" in text
    assert sorted(await visible_health(browser)) == ["down", "down", "up", "up"]
    assert scene.up.url("/metrics") in text
    assert 'env="prod"' in text
    await shot(browser, "targets")


async def test_failing_target_shows_error_and_fix(scene: Scene, browser: Chromium) -> None:
    await browser.javascript(True)
    await browser.goto(scene.url("/targets"))
    unauthorized = await browser.text("#pool-unauthorized")
    assert "401 Unauthorized" in unauthorized
    assert "Fix: the bearer token is expired" in unauthorized
    refused = await browser.text("#pool-refused")
    assert "refused: nothing listens there" in refused
    assert "Fix: check the port in urls" in refused


async def test_unhealthy_filter_with_javascript(scene: Scene, browser: Chromium) -> None:
    await browser.javascript(True)
    await browser.goto(scene.url("/targets"))
    assert await browser.evaluate("document.getElementById('apply').hidden") is True
    await browser.click("input[name=state]")
    assert await visible_health(browser) == ["down", "down"]
    assert await browser.evaluate("location.search") == "?state=unhealthy"
    text = await browser.text("main")
    assert "unauthorized" in text and "refused" in text
    assert "relabeled (" not in text and scene.up.url("/metrics") not in text
    await shot(browser, "targets-unhealthy")
    await browser.type("input[name=q]", "refused")
    assert await visible_health(browser) == ["down"]
    assert "unauthorized (" not in await browser.text("main")
    await browser.type("input[name=q]", "no target has this text")
    assert await visible_health(browser) == []
    assert "No targets match." in await browser.text("main")
    await browser.type("input[name=q]", "")
    await browser.click("input[name=state]")
    assert len(await visible_health(browser)) == 4


async def test_unhealthy_filter_without_javascript(scene: Scene, browser: Chromium) -> None:
    await browser.javascript(False)
    try:
        await browser.goto(scene.url("/targets?state=unhealthy"))
        assert await visible_health(browser) == ["down", "down"]
        await shot(browser, "targets-unhealthy-nojs")
        # The form alone: tick the box, press Apply, the server answers with the filtered page.
        await browser.goto(scene.url("/targets"))
        assert len(await visible_health(browser)) == 4
        assert await browser.evaluate("document.getElementById('apply').offsetParent !== null") is True
        await browser.click("input[name=state]")
        await browser.click("#apply", navigates=True)
        assert await browser.evaluate("location.search") == "?state=unhealthy&q="
        assert await visible_health(browser) == ["down", "down"]
        # A word, not "401": the random ports in the other targets' URLs may contain those digits.
        await browser.goto(scene.url("/targets?q=Unauthorized"))
        assert await visible_health(browser) == ["down"]
        assert "unauthorized" in await browser.text("main")
    finally:
        await browser.javascript(True)


async def test_relabel_steps_show_the_rule_that_dropped_a_target(scene: Scene, browser: Chromium) -> None:
    await browser.goto(scene.url("/service-discovery"))
    text = await browser.text("main")
    assert "relabeled (1 active / 2 discovered)" in text
    assert "dropped by target_relabel_configs rule #2 (action: drop)" in text
    assert '__metrics_path__="/internal/metrics"' in text
    await shot(browser, "service-discovery")
    link = await browser.evaluate(
        "Array.from(document.querySelectorAll('tr')).find(r => r.innerText.includes('dropped by'))"
        ".querySelector('a').getAttribute('href')")
    await browser.goto(scene.url(str(link)))
    steps = await browser.text("main")
    assert "Rule #1: replace" in steps and "replacement: prod" in steps and 'env="prod"' in steps
    assert "Rule #2: drop" in steps and "regex: /internal/.*" in steps
    assert "dropped here" in steps.lower()
    assert "Rule #3" not in steps  # relabeling stops at the rule that dropped the target
    assert "Dropped: dropped by target_relabel_configs rule #2 (action: drop)." in steps
    await shot(browser, "relabel-dropped")


async def test_relabel_steps_of_an_active_target(scene: Scene, browser: Chromium) -> None:
    await browser.goto(scene.url("/targets?q=debug"))
    link = await browser.evaluate(
        "Array.from(document.querySelectorAll('tr.target')).find(r => r.offsetParent !== null)"
        ".querySelector('a').getAttribute('href')")
    await browser.goto(scene.url(str(link)))
    steps = await browser.text("main")
    assert "Rule #3: replace" in steps and 'debug="1"' in steps
    final = await browser.text("#result")
    assert 'env="prod"' in final and 'job="relabeled"' in final and "__address__" not in final
    await shot(browser, "relabel-active")


@pytest.mark.parametrize(("path", "name", "expected"), [
    ("/", "index", ["Targets", "2/4 up", "Writers", "Configuration"]),
    ("/writers", "writers", ["Ledger", "appended", "Samples sent", "Spool bytes", "Shards", "OK", "FAILING",
                             "Fix:"]),
    ("/config", "config", ["Effective configuration", "<secret>", "target_relabel_configs"]),
])
async def test_every_page_renders(scene: Scene, browser: Chromium, path: str, name: str,
                                  expected: list[str]) -> None:
    await browser.goto(scene.url(path))
    text = await browser.text("main")
    for word in expected:
        assert word in text, (path, word)
    await shot(browser, name)


async def test_api_in_the_browser(scene: Scene, browser: Chromium) -> None:
    await browser.goto(scene.url("/api/v1/targets"))
    data = json.loads(await browser.text("body"))
    assert data["status"] == "success"
    assert len(data["data"]["activeTargets"]) == 4
