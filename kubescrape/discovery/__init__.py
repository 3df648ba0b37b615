"""Service discovery: Kubernetes (``kubernetes_sd_configs`` roles through the apiserver, and the pods of
this node through the kubelet), and sharding of the discovered targets across replicas.

Every mechanism produces :class:`TargetGroup` updates; the scrape manager turns them into scrape loops.

The names below are imported on first use: the agent imports :mod:`kubescrape.discovery.shard` for every
configuration, and a package that imported everything would load the apiserver client (and PyYAML, for
kubeconfig files) into agents that discover nothing (24 ms of import on the bench machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubescrape.discovery.apiclient import (
        ApiClient,
        ApiConfig,
        ApiError,
        DiscoveryError,
        in_cluster_config,
        load_kubeconfig,
    )
    from kubescrape.discovery.kubelet import KubeletDiscovery
    from kubescrape.discovery.kubernetes import ROLES, KubernetesDiscovery, RoleSelector
    from kubescrape.discovery.shard import (
        Sharder,
        label_set_hash,
        shard_index_from_name,
        sharder_from_options,
    )
    from kubescrape.discovery.targetgroup import TargetGroup

__all__ = [
    "ROLES",
    "ApiClient",
    "ApiConfig",
    "ApiError",
    "DiscoveryError",
    "KubeletDiscovery",
    "KubernetesDiscovery",
    "RoleSelector",
    "Sharder",
    "TargetGroup",
    "in_cluster_config",
    "label_set_hash",
    "load_kubeconfig",
    "shard_index_from_name",
    "sharder_from_options",
]

# name → the submodule that defines it
_WHERE = {
    "ApiClient": "apiclient",
    "ApiConfig": "apiclient",
    "ApiError": "apiclient",
    "DiscoveryError": "apiclient",
    "in_cluster_config": "apiclient",
    "load_kubeconfig": "apiclient",
    "KubeletDiscovery": "kubelet",
    "ROLES": "kubernetes",
    "KubernetesDiscovery": "kubernetes",
    "RoleSelector": "kubernetes",
    "Sharder": "shard",
    "label_set_hash": "shard",
    "shard_index_from_name": "shard",
    "sharder_from_options": "shard",
    "TargetGroup": "targetgroup",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
