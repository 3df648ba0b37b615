"""Sharding: M members together keep every target exactly R times."""

from __future__ import annotations

import pytest

from kubescrape.discovery.shard import Sharder, label_set_hash, shard_index_from_name, sharder_from_options
from kubescrape.errors import ConfigError

TARGETS = [{"__address__": f"10.0.{i // 250}.{i % 250}:9100", "job": "pods"} for i in range(600)]


@pytest.mark.parametrize(("count", "replication"), [(1, 1), (3, 1), (3, 2), (5, 3), (2, 4)])
def test_members_together_keep_every_target_r_times(count: int, replication: int) -> None:
    members = [Sharder(count, i, replication) for i in range(count)]
    for t in TARGETS:
        assert sum(m.keep(t) for m in members) == min(replication, count)


def test_shares_are_roughly_even() -> None:
    shares = [sum(Sharder(3, i).keep(t) for t in TARGETS) for i in range(3)]
    assert sum(shares) == len(TARGETS) and min(shares) > len(TARGETS) / 3 * 0.7


def test_hash_ignores_label_order_and_sees_values() -> None:
    assert label_set_hash({"a": "1", "b": "2"}) == label_set_hash({"b": "2", "a": "1"})
    assert label_set_hash({"a": "1", "b": "2"}) != label_set_hash({"a": "12", "b": ""})


def test_index_from_statefulset_pod_name() -> None:
    assert shard_index_from_name("kubescrape-2") == 2
    with pytest.raises(ConfigError, match="does not end in -<number>"):
        shard_index_from_name("kubescrape")


def test_bad_shard_settings_name_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"outside 0\.\.2"):
        Sharder(3, 3)
    with pytest.raises(ConfigError, match="at least 1"):
        Sharder(0, 0)


def test_shard_options_take_the_index_from_the_statefulset_pod() -> None:
    assert sharder_from_options(3, "2") == Sharder(3, 2)
    assert sharder_from_options(3, "kubescrape-1", 2) == Sharder(3, 1, 2)
    assert sharder_from_options(3, None, environ={"HOSTNAME": "kubescrape-0"}) == Sharder(3, 0)
    assert sharder_from_options(3, None, environ={"POD_NAME": "agent-2", "HOSTNAME": "x"}) == Sharder(3, 2)
    assert sharder_from_options(1, None, environ={}) == Sharder()
    with pytest.raises(ConfigError, match="--shard-index"):
        sharder_from_options(3, None, environ={"HOSTNAME": "laptop"})
