"""The stand-in apiserver's store and selectors: versions, watch history, compaction, selector syntax."""

from __future__ import annotations

import pytest

from kubescrape.emulator.apistore import Expired, SelectorError, Store, field_selector, label_selector
from kubescrape.emulator.apitables import human_duration


def _pod(name: str, node: str, labels: dict[str, str] | None = None,
         ns: str = "default") -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": {"nodeName": node},
            "status": {"phase": "Running"}}


def test_put_versions_and_events() -> None:
    st = Store(first_version=100)
    pods = st.resource("", "pods")
    assert st.put(pods, _pod("a", "n1"))
    assert not st.put(pods, _pod("a", "n1")), "an unchanged object is not a new version"
    assert st.put(pods, _pod("a", "n2"))
    assert st.delete(pods, "default", "a")
    events = st.events_since(pods, 100)
    assert [(e.rv, e.type) for e in events] == [(101, "ADDED"), (102, "MODIFIED"), (103, "DELETED")]
    assert events[1].obj["metadata"]["resourceVersion"] == "102"
    assert st.events_since(pods, 102)[0].type == "DELETED"


def test_replace_all_puts_and_deletes() -> None:
    st = Store()
    nodes = st.resource("", "nodes")
    st.replace_all(nodes, [{"metadata": {"name": n}} for n in ("a", "b", "c")])
    assert st.replace_all(nodes, [{"metadata": {"name": n}} for n in ("b", "c", "d")]) == 2
    assert [o["metadata"]["name"] for o in st.items(nodes)] == ["b", "c", "d"]


def test_compaction_expires_old_versions() -> None:
    st = Store(first_version=10)
    pods = st.resource("", "pods")
    st.put(pods, _pod("a", "n1"))
    st.compact()
    with pytest.raises(Expired, match=r"too old resource version: 10 \(11\)"):
        st.events_since(pods, 10)
    assert st.events_since(pods, 11) == []


def test_history_is_bounded() -> None:
    st = Store(history=3, first_version=0)
    pods = st.resource("", "pods")
    for i in range(5):
        st.put(pods, _pod(f"p{i}", "n"))
    with pytest.raises(Expired):
        st.events_since(pods, 1)
    assert [e.rv for e in st.events_since(pods, 2)] == [3, 4, 5]


def test_watchers_receive_and_overflowing_watcher_is_dropped() -> None:
    st = Store()
    pods = st.resource("", "pods")
    w = st.subscribe(pods)
    w.limit = 2
    for i in range(3):
        st.put(pods, _pod(f"p{i}", "n"))
    items = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
    assert [i.obj["metadata"]["name"] if i else None for i in items] == ["p0", "p1", None]
    assert st.watcher_count() == 0


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("", {}, True),
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("app", {"app": ""}, True),
    ("!app", {"app": "x"}, False),
    ("tier in (a, b),app", {"tier": "b", "app": "x"}, True),
    ("tier notin (a,b)", {"tier": "a"}, False),
])
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert label_selector(selector)(labels) is expected


def test_field_selector() -> None:
    pods = Store.resource("", "pods")
    test = field_selector("spec.nodeName=n1,metadata.name!=b", pods)
    assert test(_pod("a", "n1")) and not test(_pod("b", "n1")) and not test(_pod("a", "n2"))
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.foo"):
        field_selector("spec.foo=1", pods)
    with pytest.raises(SelectorError, match=r"field label not supported: metadata\.namespace"):
        field_selector("metadata.namespace=x", Store.resource("", "nodes"))


def test_bad_label_selector() -> None:
    with pytest.raises(SelectorError):
        label_selector("a b c")


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-0.5, "0s"), (45, "45s"), (119, "119s"), (302, "5m2s"), (600, "10m"),
    (3 * 3600 + 600, "3h10m"), (10 * 3600, "10h"), (2 * 86400 + 5 * 3600, "2d5h"), (30 * 86400, "30d"),
    (800 * 86400, "2y70d"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
