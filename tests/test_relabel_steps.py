"""relabel_steps: the trace of every rule, which must end where relabel() ends, with relabel()'s result."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubescrape.relabel import RelabelConfig, relabel, relabel_steps
from tests.test_relabel import CASES, rc


@pytest.mark.parametrize(("labels", "rules", "expected"), CASES)
def test_trace_ends_with_the_result_of_relabel(
    labels: dict[str, str], rules: list[dict[str, Any]], expected: dict[str, str] | None
) -> None:
    configs = [rc(**r) for r in rules]
    steps = relabel_steps(labels, configs)
    if expected is None:
        assert steps and steps[-1].dropped and steps[-1].labels is None
        assert all(not s.dropped for s in steps[:-1])
    else:
        assert len(steps) == len(configs)
        final = steps[-1].labels if steps else {k: v for k, v in labels.items() if v}
        assert final == expected
    assert [s.index for s in steps] == list(range(len(steps)))
    assert [s.rule for s in steps] == configs[: len(steps)]


def test_each_step_shows_the_labels_after_its_rule() -> None:
    labels = {"__address__": "10.0.0.1:10250", "__metrics_path__": "/metrics/cadvisor", "job": "kubelet"}
    rules = [
        rc(target_label="env", replacement="prod"),
        rc(source_labels=["__metrics_path__"], regex="/metrics/(.*)", target_label="endpoint"),
        rc(source_labels=["endpoint"], regex="probes", action="drop"),
        rc(regex="job", action="labeldrop"),
    ]
    steps = relabel_steps(labels, rules)
    assert [s.labels for s in steps] == [
        {**labels, "env": "prod"},
        {**labels, "env": "prod", "endpoint": "cadvisor"},
        {**labels, "env": "prod", "endpoint": "cadvisor"},
        {"__address__": "10.0.0.1:10250", "__metrics_path__": "/metrics/cadvisor", "env": "prod",
         "endpoint": "cadvisor"},
    ]
    assert labels["job"] == "kubelet" and "env" not in labels  # the input is not changed


def test_trace_stops_at_the_rule_that_dropped() -> None:
    rules = [rc(source_labels=["job"], regex="node", action="keep"), rc(target_label="x", replacement="y")]
    steps = relabel_steps({"job": "kubelet"}, rules)
    assert len(steps) == 1 and steps[0].dropped and steps[0].rule.action == "keep"


def test_no_rules_no_steps() -> None:
    assert relabel_steps({"a": "1"}, []) == []


RULES = [
    rc(source_labels=["a"], regex="x.*", action="drop"),
    rc(source_labels=["b"], regex="", action="drop"),
    rc(source_labels=["a", "b"], regex="(.*);(.*)", target_label="c", replacement="$2-$1"),
    rc(source_labels=["c"], regex="-.*", action="keep"),
    rc(regex="([ab])", replacement="copy_$1", action="labelmap"),
    rc(regex="copy_a", action="labeldrop"),
    rc(source_labels=["a"], target_label="h", modulus=3, action="hashmod"),
    rc(source_labels=["a"], target_label="b", action="keepequal"),
    rc(source_labels=["b"], target_label="u", action="uppercase"),
]


@given(
    labels=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "x1", "y", "Q"])),
    picks=st.lists(st.integers(0, len(RULES) - 1), max_size=6),
)
def test_trace_agrees_with_relabel(labels: dict[str, str], picks: list[int]) -> None:
    configs: list[RelabelConfig] = [RULES[i] for i in picks]
    expected = relabel(labels, configs)
    steps = relabel_steps(labels, configs)
    if expected is None:
        assert steps[-1].dropped
    elif steps:
        assert len(steps) == len(configs) and steps[-1].labels == expected
    else:
        assert expected == {k: v for k, v in labels.items() if v}
