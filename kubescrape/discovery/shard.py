"""Sharding targets across replicas: every member discovers everything and keeps its share.

The share is decided by a hash ``h`` of the target's final label set and scrape URL: after relabeling,
so discovered label sets that relabel into one target (a pod's several container ports rewritten to its
annotated port) belong to one member, and stable across members, which all see the same objects. Member
``h mod M`` keeps the target and, with a replication factor ``R``, so do the ``R - 1`` members after it,
which is how vmagent's ``-promscrape.cluster.membersCount`` / ``memberNum`` / ``replicationFactor``
divide the work. So ``M`` members together scrape every target exactly ``R`` times.

When ``M`` changes, ``h mod M`` changes for most targets: during a rollout members with the old and the
new ``M`` overlap, so some targets are briefly scraped twice or not at all until every member runs with
the same ``M`` (the same trade-off as vmagent's; a consistent hash would move fewer targets but needs
every member to know every other).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from kubescrape.errors import ConfigError

__all__ = ["Sharder", "label_set_hash", "shard_index_from_name", "sharder_from_options"]


def label_set_hash(labels: Mapping[str, str]) -> int:
    """A stable 64-bit hash of a label set (order-independent)."""
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(labels):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(labels[k].encode())
        h.update(b"\xff")
    return int.from_bytes(h.digest(), "big")


def shard_index_from_name(name: str) -> int:
    """The ordinal of a StatefulSet pod name: ``agent-2`` → 2."""
    m = re.search(r"-(\d+)$", name)
    if not m:
        raise ConfigError(f"cannot take the shard index from {name!r}: it does not end in -<number>",
                          "pass --shard-index N, or run as a StatefulSet pod (agent-0, agent-1, …)")
    return int(m.group(1))


@dataclass(frozen=True)
class Sharder:
    """Member ``index`` of ``count``, each target kept by ``replication`` members."""

    count: int = 1
    index: int = 0
    replication: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shard-count {self.count} must be at least 1", "use --shard-count 1 or more")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"--shard-index {self.index} is outside 0..{self.count - 1}",
                              "use an index below --shard-count (StatefulSet ordinals start at 0)")
        if self.replication < 1:
            raise ConfigError(f"replication factor {self.replication} must be at least 1",
                              "use --shard-replication 1 or more")

    def members(self, labels: Mapping[str, str]) -> set[int]:
        """The members that keep a target."""
        first = label_set_hash(labels) % self.count
        return {(first + r) % self.count for r in range(min(self.replication, self.count))}

    def keep(self, labels: Mapping[str, str]) -> bool:
        """True when this member scrapes the target."""
        return self.count == 1 or self.index in self.members(labels)


def sharder_from_options(count: int, index: str | int | None, replication: int = 1, *,
                         environ: Mapping[str, str] | None = None) -> Sharder:
    """``--shard-count M --shard-index N [--shard-replication R]``: ``N`` may be a number or a StatefulSet
    pod name (``kubescrape-2``); without it, the ordinal of ``$POD_NAME`` or ``$HOSTNAME`` (a
    StatefulSet pod's hostname is its name) when sharding, else 0."""
    if index is None or index == "":
        if count <= 1:
            return Sharder(count, 0, replication)
        env = os.environ if environ is None else environ
        name = env.get("POD_NAME") or env.get("HOSTNAME") or ""
        return Sharder(count, shard_index_from_name(name), replication)
    if isinstance(index, int) or index.isdigit():
        return Sharder(count, int(index), replication)
    return Sharder(count, shard_index_from_name(index), replication)
