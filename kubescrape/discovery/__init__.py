"""Service discovery: Kubernetes (``kubernetes_sd_configs`` roles through the apiserver, and the pods of
this node through the kubelet), and sharding of the discovered targets across replicas.

Every mechanism produces :class:`TargetGroup` updates; the scrape manager turns them into scrape loops.
"""

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
from kubescrape.discovery.shard import Sharder, label_set_hash, shard_index_from_name, sharder_from_options
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
