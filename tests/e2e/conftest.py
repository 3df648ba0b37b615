from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.prom import Prometheus, prometheus_available, running_prometheus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus server with the remote-write receiver on a free loopback port."""
    if not prometheus_available():
        pytest.fail("the Debian package 'prometheus' is not installed: "
                    "run `bash scripts/test`, which installs it")
    with running_prometheus(tmp_path / "prometheus") as prom:
        yield prom
