"""The labeler's shortcut for targets without filters, prefixes or rules gives what the full one gives.

A target with a ``metrics_drop`` glob that matches nothing takes the full labeler with the same outcome
for every series, so the two are compared on generated label sets: empty values, a scraped
``__name__``, labels that clash with target labels (``exported_`` renaming), non-ASCII text.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.scrape.cache import COMPILED
from kubescrape.scrape.targets import PlainLabeler, build_targets, make_labeler

# A Categraf instance with target labels only (agent_hostname omitted), built as the agent builds it.
TARGET = build_targets(AgentConfig(
    global_=GlobalConfig(hostname="node-1", interval=15.0, omit_hostname=True),
    instances=[InstanceConfig(urls=["https://10.0.0.1:10250/metrics/cadvisor"],
                              labels={"instance": "node-1:10250", "job": "kubelet", "exported_job": "x"})],
))[0]

_scraped = st.lists(
    st.tuples(
        st.sampled_from(["pod", "namespace", "job", "instance", "exported_job", "__name__", "a", "é"]),
        st.sampled_from(["", "x", "node-1:10250", "é", " "]),
    ),
    max_size=8,
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["m", "container_cpu_usage_seconds_total", "é"]), _scraped)
def test_plain_labeler_agrees_with_the_full_one(name: str, scraped: list[tuple[str, str]]) -> None:
    plain = make_labeler(TARGET)
    full = make_labeler(dataclasses.replace(TARGET, metrics_drop=("never_matches_this_name",)))
    # The shortcut is in use, and compared with the full labeler.
    assert isinstance(plain, PlainLabeler) and not isinstance(full, PlainLabeler)
    assert plain(name, list(scraped)) == full(name, list(scraped))


_target_labels = st.lists(
    st.tuples(
        st.sampled_from(["instance", "job", "exported_job", "__name__", "pod"]), st.sampled_from(["", "v"])
    ),
    max_size=4,
).map(tuple)


@pytest.mark.skipif(
    not COMPILED, reason="the compiled fast path is not built here (or KUBESCRAPE_PURE_PYTHON)"
)
@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["m", "é"]), _scraped, _target_labels)
def test_compiled_plain_labels_agree_with_the_full_labeler(
    name: str, scraped: list[tuple[str, str]], target_labels: tuple[tuple[str, str], ...]
) -> None:
    """Whenever the compiled helper answers (no clash, no repeated name), it answers what the full
    labeler does, target labels with ``__name__`` or repeated names included."""
    from kubescrape.scrape import _fastpath

    full = make_labeler(
        dataclasses.replace(TARGET, labels=target_labels, metrics_drop=("never_matches_this_name",))
    )
    got = _fastpath.plain_labels(name, list(scraped), target_labels)
    if got is not None:
        assert got == full(name, list(scraped))


@pytest.mark.skipif(
    not COMPILED, reason="the compiled fast path is not built here (or KUBESCRAPE_PURE_PYTHON)"
)
def test_compiled_plain_labels_take_the_usual_series_and_leave_clashes() -> None:
    from kubescrape.scrape import _fastpath

    scraped = [("pod", "p"), ("container", ""), ("namespace", "n")]
    assert _fastpath.plain_labels("m", scraped, TARGET.labels) == [
        ("__name__", "m"),
        ("exported_job", "x"),
        ("instance", "node-1:10250"),
        ("job", "kubelet"),
        ("namespace", "n"),
        ("pod", "p"),
    ]
    assert _fastpath.plain_labels("m", [("job", "j")], TARGET.labels) is None
    assert _fastpath.plain_labels("m", [("a", "1"), ("a", "2")], TARGET.labels) is None
    assert _fastpath.plain_labels("m", [("a", b"1")], TARGET.labels) is None  # type: ignore[list-item]
