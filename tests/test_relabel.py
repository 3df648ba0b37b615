"""Relabeling: the cases of Prometheus' model/relabel/relabel_test.go, validation, and Go expansion."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from kubescrape.relabel import RelabelConfig, compile_go_regex, go_expand, relabel


def rc(**kwargs: Any) -> RelabelConfig:
    return RelabelConfig.model_validate(kwargs)


# (input, rules, output or None for dropped) — from TestRelabel in Prometheus.
CASES: list[tuple[dict[str, str], list[dict[str, Any]], dict[str, str] | None]] = [
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "choo-choo"},
    ),
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [
            {
                "source_labels": ["a", "b"],
                "regex": "f(.*);(.*)r",
                "target_label": "a",
                "replacement": "b${1}${2}m",
            },
            {
                "source_labels": ["c", "a"],
                "regex": "(b).*b(.*)ba(.*)",
                "target_label": "d",
                "replacement": "$1$2$2$3",
            },
        ],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
    ),
    (
        {"a": "foo"},
        [
            {"source_labels": ["a"], "regex": ".*o.*", "action": "drop"},
            {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch$1-ch$1"},
        ],
        None,
    ),
    ({"a": "foo", "b": "bar"}, [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}], None),
    (
        {"a": "abc"},
        [{"source_labels": ["a"], "regex": ".*(b).*", "target_label": "d", "replacement": "$1"}],
        {"a": "abc", "d": "b"},
    ),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "no-match", "action": "drop"}], {"a": "foo"}),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "f|o", "action": "drop"}], {"a": "foo"}),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}], None),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}], {"a": "foo"}),
    # No replacement must be applied if there is no match.
    (
        {"a": "boo"},
        [{"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"}],
        {"a": "boo"},
    ),
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "976"},
    ),
    (
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
    ),
    (
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
    ),
    (
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {
            "a": "foo",
            "__meta_my_bar": "aaa",
            "__meta_my_baz": "bbb",
            "__meta_other": "ccc",
            "my_bar": "aaa",
            "my_baz": "bbb",
        },
    ),
    (
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${2}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value", "name": "value"},
    ),
    (  # invalid replacement ""
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${3}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value"},
    ),
    (  # invalid target_labels
        {"a": "some-name-0"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)(-[^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
        ],
        {"a": "some-name-0"},
    ),
    (  # more complex real-life like usecase
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)path:(/[^,]+).*",
                "replacement": "${1}",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)job:([^,]+).*",
                "replacement": "${1}",
                "target_label": "job",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
                "replacement": "${2}",
                "target_label": "${1}",
            },
        ],
        {
            "__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar",
            "__metrics_path__": "/secret",
            "job": "some-job",
            "foo": "bar",
        },
    ),
    (  # prometheus/prometheus#12283
        {
            "__meta_kubernetes_pod_container_port_name": "foo",
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
        },
        [
            {"regex": "^__meta_kubernetes_pod_container_port_name$", "action": "labeldrop"},
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_XXX_metrics_port"],
                "regex": "(.+)",
                "replacement": "metrics",
                "target_label": "__meta_kubernetes_pod_container_port_name",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "^metrics$",
                "action": "keep",
            },
        ],
        {
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
            "__meta_kubernetes_pod_container_port_name": "metrics",
        },
    ),
    (
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
    ),
    ({"a": "foo", "b1": "bar", "b2": "baz"}, [{"regex": "(b.*)", "action": "labeldrop"}], {"a": "foo"}),
    (
        {"foo": "bAr123Foo"},
        [
            {"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
            {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"},
        ],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}],
        None,
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}],
        None,
    ),
    # Beyond the Prometheus table: empty replacement deletes; empty source with default regex sets literally.
    ({"a": "x", "b": "y"}, [{"source_labels": ["a"], "target_label": "b", "replacement": ""}], {"a": "x"}),
    (
        {"a": "x"},
        [{"source_labels": ["missing"], "target_label": "c", "replacement": "lit"}],
        {"a": "x", "c": "lit"},
    ),
    ({"a": "x", "e": ""}, [], {"a": "x"}),
    ({"a": "X"}, [{"source_labels": ["a"], "regex": "(?i)x", "action": "keep"}], {"a": "X"}),
    # Anchoring: "o" alone does not match "foo".
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "o", "action": "keep"}], None),
    ({"a": "foo\n"}, [{"source_labels": ["a"], "regex": "foo", "action": "keep"}], None),
]


@pytest.mark.parametrize(("labels", "rules", "want"), CASES)
def test_relabel_table(
    labels: dict[str, str], rules: list[dict[str, Any]], want: dict[str, str] | None
) -> None:
    before = dict(labels)
    assert relabel(labels, [rc(**r) for r in rules]) == want
    assert labels == before  # the input is not modified


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "replace"}, "requires 'target_label' value"),
        ({"action": "lowercase"}, "requires 'target_label' value"),
        ({"action": "lowercase", "target_label": "${3}"}, "is invalid 'target_label'"),
        ({"source_labels": ["a"], "regex": "x(.)", "target_label": "0${3}"}, "is invalid 'target_label'"),
        ({"source_labels": ["a"], "target_label": "-${3}"}, "is invalid 'target_label' for replace action"),
        ({"action": "hashmod", "target_label": "t"}, "requires non-zero modulus"),
        ({"action": "uppercase", "target_label": "t", "replacement": "x"}, "'replacement' can not be set"),
        ({"action": "keepequal", "target_label": "t", "regex": "a"}, "requires only 'source_labels'"),
        ({"action": "labeldrop", "source_labels": ["a"]}, "requires only 'regex'"),
        ({"action": "labelkeep", "target_label": "a"}, "requires only 'regex'"),
        ({"action": "labelmap", "replacement": "-x"}, "is invalid 'replacement'"),
        ({"action": "explode", "target_label": "t"}, "Input should be"),
        ({"regex": "(unclosed", "target_label": "t"}, "does not compile"),
        ({"source_labels": ["bad-name"], "target_label": "t"}, "not a valid label name"),
    ],
)
def test_validation_like_prometheus(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        rc(**rule)


def test_valid_config_with_dollar_target() -> None:
    cfg = rc(source_labels=["a"], regex="some-([^-]+)-([^,]+)", replacement="${1}", target_label="${3}")
    assert cfg.action == "replace"
    assert rc(action="DROP", source_labels=["a"]).action == "drop"


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("-label", False),
        ("label", True),
        ("label${1}", True),
        ("${1}label", True),
        ("${1}", True),
        ("${", False),
        ("$", False),
        ("${}", False),
        ("foo${", False),
        ("$1", True),
        ("asd$2asd", True),
        ("-foo${1}bar-", False),
        ("_${1}_", True),
        ("foo${bar}foo", True),
    ],
)
def test_target_label_validity(text: str, valid: bool) -> None:
    # TestTargetLabelValidity: checked through the replace action's validation.
    if valid:
        rc(source_labels=["a"], target_label=text)
    else:
        with pytest.raises(ValidationError):
            rc(source_labels=["a"], target_label=text)


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("$1", "b"),
        ("${1}", "b"),
        ("$1x", ""),  # Go: the name is "1x", which is no group
        ("${1}x", "bx"),
        ("$name", "c"),
        ("${name}", "c"),
        ("$$1", "$1"),
        ("$", "$"),
        ("a$-b", "a$-b"),
        ("${1", "${1"),
        ("$9", ""),
        ("$0", "abc"),
        ("$01", ""),
        ("plain", "plain"),
    ],
)
def test_go_expand(template: str, want: str) -> None:
    m = compile_go_regex("a(b)(?P<name>c)").fullmatch("abc")
    assert m is not None
    assert go_expand(template, m) == want


def test_go_regex_spellings() -> None:
    assert compile_go_regex("(?<x>a)").fullmatch("a") is not None
    assert compile_go_regex("[[:digit:]]+").fullmatch("123") is not None
    assert compile_go_regex("[[:alpha:]]+").fullmatch("1") is None
    assert compile_go_regex(r"\d+").fullmatch("١٢") is None  # ASCII digits only, as in Go
    with pytest.raises(re.error, match="ungreedy"):
        compile_go_regex("(?U)a+")
