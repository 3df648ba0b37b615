"""The labeler's shortcut for targets without filters, prefixes or rules gives what the full one gives.

A target with a ``metrics_drop`` glob that matches nothing takes the full labeler with the same outcome
for every series, so the two are compared on generated label sets: empty values, a scraped
``__name__``, labels that clash with target labels (``exported_`` renaming), non-ASCII text.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.scrape.targets import Target, TLSSettings, make_labeler

TARGET = Target(
    url="https://10.0.0.1:10250/metrics/cadvisor",
    name="kubelet",
    labels=(("instance", "node-1:10250"), ("job", "kubelet"), ("exported_job", "x")),
    interval=15.0,
    timeout=10.0,
    honor_labels=False,
    honor_timestamps=True,
    body_size_limit=0,
    tls=TLSSettings(False, None, None, None, None, False),
    bearer_token_file=None,
    bearer_token_string=None,
    username=None,
    password=None,
    headers=(),
    metric_relabel_configs=(),
    ignore_metrics=(),
    ignore_label_keys=(),
)

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
    assert plain.__name__ != full.__name__  # the shortcut is in use, and compared with the full labeler
    assert plain(name, list(scraped)) == full(name, list(scraped))
