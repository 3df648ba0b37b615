"""Target groups: what every discovery mechanism produces, Prometheus' ``targetgroup.Group``.

A group has a ``source`` (``pod/<namespace>/<name>``, ``node/<name>`` …) unique within its
discoverer, the per-target label sets and the labels common to all of them. A group with no targets
tells the consumer that everything it held under that source is gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

__all__ = ["META_PREFIX", "TargetGroup", "sanitize_label_name"]

META_PREFIX = "__meta_kubernetes_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(name: str) -> str:
    """Prometheus' ``strutil.SanitizeLabelName``: every character outside ``[a-zA-Z0-9_]`` becomes ``_``."""
    return _INVALID.sub("_", name)


class TargetGroup(NamedTuple):
    """Targets from one source, and the labels they share."""

    source: str
    targets: tuple[Mapping[str, str], ...] = ()
    labels: Mapping[str, str] = {}

    def label_sets(self) -> Iterator[dict[str, str]]:
        """Each target's full label set: the group's labels overridden by the target's own."""
        for t in self.targets:
            yield {**self.labels, **t}
