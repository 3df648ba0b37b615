"""JSON bodies: ``/stats/summary`` (Summary API v1alpha1), ``/pods`` (a v1 PodList) and ``/configz``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubescrape.emulator.payloads_cadvisor import Cgroup, Machine
from kubescrape.emulator.payloads_pods import MI, Pod

Json = dict[str, Any]


def rfc3339(t: float) -> str:
    """``2023-11-14T22:13:20Z`` (seconds precision, as metav1.Time marshals)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _cpu(cg: Cgroup, at: str, usage: Callable[[Cgroup], float], rate: Callable[[Cgroup], float]) -> Json:
    return {"time": at, "usageNanoCores": int(rate(cg) * 1e9), "usageCoreNanoSeconds": int(usage(cg) * 1e9)}


def _mem(cg: Cgroup, at: str, ws: Callable[[Cgroup], float], limit: int) -> Json:
    w = int(ws(cg))
    out: Json = {
        "time": at,
        "usageBytes": int(w * 1.3),
        "workingSetBytes": w,
        "rssBytes": int(w * 0.82),
        "pageFaults": 0,
        "majorPageFaults": 0,
    }
    if limit:
        out = {
            "time": at,
            "availableBytes": max(0, limit - w),
            **{k: v for k, v in out.items() if k != "time"},
        }
    return out


def stats_summary(
    *,
    node: str,
    machine: Machine,
    boot: float,
    now: float,
    pods: Sequence[Pod],
    cgroups: dict[str, Cgroup],
    root: Cgroup,
    usage: Callable[[Cgroup], float],
    ws: Callable[[Cgroup], float],
    net: Callable[[float, Cgroup], float],
    stats_time: Callable[[Cgroup], float],
) -> bytes:
    """The Summary API body. ``usage``/``ws`` evaluate a cgroup's cpu seconds / working set now;
    ``net(rate, cgroup)`` a byte counter of that average rate."""
    at = rfc3339(now)

    def when(cg: Cgroup) -> str:
        # Each cgroup's stats carry the time of its last housekeeping, as cAdvisor's do.
        return rfc3339(stats_time(cg))

    def rate(cg: Cgroup) -> float:
        return cg.cpu

    def fs(cap: int, used: int, inodes: int) -> Json:
        return {
            "time": at,
            "availableBytes": cap - used,
            "capacityBytes": cap,
            "usedBytes": used,
            "inodesFree": inodes - used // 65536,
            "inodes": inodes,
            "inodesUsed": used // 65536,
        }

    ifaces = [
        {
            "name": i,
            "rxBytes": int(net(rx, root)),
            "rxErrors": 0,
            "txBytes": int(net(tx, root)),
            "txErrors": 0,
        }
        for i, rx, tx, _ in root.net[:2]
    ]
    node_json: Json = {
        "nodeName": node,
        "systemContainers": [
            {
                "name": name,
                "startTime": rfc3339(boot + 20),
                "cpu": _cpu(cgroups[path], when(cgroups[path]), usage, rate),
                "memory": _mem(cgroups[path], when(cgroups[path]), ws, 0),
            }
            for name, path in (
                ("kubelet", "/system.slice/kubelet.service"),
                ("runtime", "/system.slice/containerd.service"),
                ("pods", "/kubepods"),
            )
        ],
        "startTime": rfc3339(boot),
        "cpu": _cpu(root, when(root), usage, rate),
        "memory": _mem(root, when(root), ws, machine.memory),
        "network": {"time": at, **ifaces[0], "interfaces": ifaces},
        "fs": fs(107_361_579_008, 31_742_541_824, 6_553_600),
        "runtime": {"imageFs": fs(107_361_579_008, 9_823_000_000 + 180_000_000 * len(pods), 6_553_600)},
        "rlimit": {"time": at, "maxpid": 4194304, "curproc": 600 + 9 * len(pods)},
    }
    pods_json = []
    for p in pods:
        pcg = cgroups[p.cgroup]
        sandbox = cgroups[f"{p.cgroup}/{p.sandbox_id}"]
        containers = []
        for c in p.containers:
            ccg = cgroups[f"{p.cgroup}/{c.container_id}"]
            containers.append(
                {
                    "name": c.name,
                    "startTime": rfc3339(c.start),
                    "cpu": _cpu(ccg, when(ccg), usage, rate),
                    "memory": _mem(ccg, when(ccg), ws, c.spec.mem_lim * MI),
                    "rootfs": {
                        **fs(107_361_579_008, 40960 + c.kernel * 16, 6_553_600),
                        "usedBytes": 40960 + c.kernel * 16,
                    },
                    "logs": {**fs(107_361_579_008, 4096 + (c.kernel % 97) * 24576, 6_553_600)},
                }
            )
        pod_json: Json = {
            "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
            "startTime": rfc3339(p.start),
            "containers": containers,
            "cpu": _cpu(pcg, when(pcg), usage, rate),
            "memory": _mem(pcg, when(pcg), ws, 0),
            "network": {
                "time": at,
                "name": "eth0",
                "rxBytes": int(net(p.rx_bps, sandbox)),
                "rxErrors": 0,
                "txBytes": int(net(p.tx_bps, sandbox)),
                "txErrors": 0,
                "interfaces": [
                    {
                        "name": "eth0",
                        "rxBytes": int(net(p.rx_bps, sandbox)),
                        "rxErrors": 0,
                        "txBytes": int(net(p.tx_bps, sandbox)),
                        "txErrors": 0,
                    }
                ],
            },
            "volume": [
                {
                    **fs(
                        10_464_022_528 if p.workload.pvc else 16_000_000_000,
                        1_200_000_000 if p.workload.pvc else 12288,
                        655360,
                    ),
                    "name": p.workload.pvc or "kube-api-access",
                }
            ],
            "ephemeral-storage": fs(
                107_361_579_008, 45056 + sum(c.kernel for c in p.containers) * 16, 6_553_600
            ),
            "process_stats": {"process_count": pcg.processes},
        }
        pods_json.append(pod_json)
    return json.dumps({"node": node_json, "pods": pods_json}, separators=(",", ":")).encode()


def pod_list(*, node: str, node_ip: str, pods: Sequence[Pod]) -> bytes:
    """The ``/pods`` body: a v1 PodList of what the kubelet runs."""
    items = []
    for p in pods:
        wl = p.workload
        owner_kind = {"Deployment": "ReplicaSet"}.get(wl.kind, wl.kind)
        owner_name = p.name.rsplit("-", 1)[0] if wl.kind in ("Deployment", "Job") else wl.app
        labels = {"app.kubernetes.io/name": wl.app}
        if wl.kind == "Deployment":
            labels["pod-template-hash"] = owner_name.rsplit("-", 1)[-1]
        containers = []
        statuses = []
        for c in p.containers:
            s = c.spec
            resources: Json = {}
            req = {
                k: v
                for k, v in (
                    ("cpu", f"{s.cpu_req}m" if s.cpu_req else ""),
                    ("memory", f"{s.mem_req}Mi" if s.mem_req else ""),
                )
                if v
            }
            lim = {
                k: v
                for k, v in (
                    ("cpu", f"{s.cpu_lim}m" if s.cpu_lim else ""),
                    ("memory", f"{s.mem_lim}Mi" if s.mem_lim else ""),
                )
                if v
            }
            if req:
                resources["requests"] = req
            if lim:
                resources["limits"] = lim
            spec: Json = {
                "name": s.name,
                "image": s.image,
                "resources": resources,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [
                    {
                        "name": "kube-api-access",
                        "readOnly": True,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
            }
            if s.port:
                spec["ports"] = [{"name": "http", "containerPort": s.port, "protocol": "TCP"}]
            for probe in s.probes:
                key = {"Liveness": "livenessProbe", "Readiness": "readinessProbe", "Startup": "startupProbe"}[
                    probe
                ]
                spec[key] = {
                    "httpGet": {"path": "/healthz", "port": s.port or 8080, "scheme": "HTTP"},
                    "timeoutSeconds": 1,
                    "periodSeconds": 10,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                }
            containers.append(spec)
            statuses.append(
                {
                    "name": s.name,
                    "state": {"running": {"startedAt": rfc3339(c.start)}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": c.restarts,
                    "image": s.image,
                    "imageID": f"{s.image.rsplit(':', 1)[0]}@{c.image_id}",
                    "containerID": f"containerd://{c.container_id}",
                    "started": True,
                }
            )
        started = rfc3339(p.start)
        items.append(
            {
                "metadata": {
                    "name": p.name,
                    "namespace": p.namespace,
                    "uid": p.uid,
                    "resourceVersion": str(1_000_000 + p.slot * 1000 + p.generation),
                    "creationTimestamp": rfc3339(p.start - 2),
                    "labels": labels,
                    "annotations": {
                        "kubernetes.io/config.seen": rfc3339(p.start - 1).replace("Z", ".000000000Z"),
                        "kubernetes.io/config.source": "api",
                    }
                    | p.annotations,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1" if wl.kind == "Job" else "apps/v1",
                            "kind": owner_kind,
                            "name": owner_name,
                            "uid": f"{p.uid[:24]}{wl.app.encode().hex()[:12]:0<12}",
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "volumes": [
                        {
                            "name": "kube-api-access",
                            "projected": {
                                "sources": [
                                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                                ],
                                "defaultMode": 420,
                            },
                        }
                    ],
                    "containers": containers,
                    "restartPolicy": "Never" if wl.kind == "Job" else "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default",
                    "serviceAccount": "default",
                    "nodeName": node,
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                    "tolerations": [
                        {
                            "key": "node.kubernetes.io/not-ready",
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": 300,
                        }
                    ],
                    "priority": 0,
                    "enableServiceLinks": True,
                    "preemptionPolicy": "PreemptLowerPriority",
                },
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                    ],
                    "hostIP": node_ip,
                    "podIP": p.ip,
                    "podIPs": [{"ip": p.ip}],
                    "startTime": started,
                    "containerStatuses": statuses,
                    "qosClass": p.qos,
                },
            }
        )
    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
    return json.dumps(body, separators=(",", ":")).encode()


def configz(*, node_ip: str, version: str) -> bytes:
    """The ``/configz`` body: ``{"kubeletconfig": {...}}`` as a kubeadm-installed kubelet reports it."""
    del node_ip, version  # kubeadm's kubelet config pins neither; they come from flags
    cfg: Json = {
        "enableServer": True,
        "staticPodPath": "/etc/kubernetes/manifests",
        "syncFrequency": "1m0s",
        "fileCheckFrequency": "20s",
        "httpCheckFrequency": "20s",
        "address": "0.0.0.0",
        "port": 10250,
        "tlsCertFile": "/var/lib/kubelet/pki/kubelet.crt",
        "tlsPrivateKeyFile": "/var/lib/kubelet/pki/kubelet.key",
        "rotateCertificates": True,
        "authentication": {
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "anonymous": {"enabled": False},
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "registryPullQPS": 5,
        "registryBurst": 10,
        "eventRecordQPS": 50,
        "eventBurst": 100,
        "enableDebuggingHandlers": True,
        "healthzPort": 10248,
        "healthzBindAddress": "127.0.0.1",
        "oomScoreAdj": -999,
        "clusterDomain": "cluster.local",
        "clusterDNS": ["10.96.0.10"],
        "streamingConnectionIdleTimeout": "4h0m0s",
        "nodeStatusUpdateFrequency": "10s",
        "nodeStatusReportFrequency": "5m0s",
        "nodeLeaseDurationSeconds": 40,
        "imageMinimumGCAge": "2m0s",
        "imageMaximumGCAge": "0s",
        "imageGCHighThresholdPercent": 85,
        "imageGCLowThresholdPercent": 80,
        "volumeStatsAggPeriod": "1m0s",
        "cgroupsPerQOS": True,
        "cgroupDriver": "cgroupfs",
        "cpuManagerPolicy": "none",
        "cpuManagerReconcilePeriod": "10s",
        "memoryManagerPolicy": "None",
        "topologyManagerPolicy": "none",
        "topologyManagerScope": "container",
        "runtimeRequestTimeout": "2m0s",
        "hairpinMode": "promiscuous-bridge",
        "maxPods": 110,
        "podPidsLimit": -1,
        "resolvConf": "/run/systemd/resolve/resolv.conf",
        "cpuCFSQuota": True,
        "cpuCFSQuotaPeriod": "100ms",
        "nodeStatusMaxImages": 50,
        "maxOpenFiles": 1000000,
        "contentType": "application/vnd.kubernetes.protobuf",
        "kubeAPIQPS": 50,
        "kubeAPIBurst": 100,
        "serializeImagePulls": True,
        "evictionHard": {
            "imagefs.available": "15%",
            "memory.available": "100Mi",
            "nodefs.available": "10%",
            "nodefs.inodesFree": "5%",
        },
        "evictionPressureTransitionPeriod": "5m0s",
        "enableControllerAttachDetach": True,
        "makeIPTablesUtilChains": True,
        "iptablesMasqueradeBit": 14,
        "iptablesDropBit": 15,
        "failSwapOn": True,
        "memorySwap": {},
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 5,
        "configMapAndSecretChangeDetectionStrategy": "Watch",
        "enforceNodeAllocatable": ["pods"],
        "volumePluginDir": "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/",
        "logging": {
            "format": "text",
            "flushFrequency": "5s",
            "verbosity": 0,
            "options": {"json": {"infoBufferSize": "0"}},
        },
        "enableSystemLogHandler": True,
        "enableSystemLogQuery": False,
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        "enableProfilingHandler": True,
        "enableDebugFlagsHandler": True,
        "seccompDefault": False,
        "memoryThrottlingFactor": 0.9,
        "registerNode": True,
        "localStorageCapacityIsolation": True,
        "containerRuntimeEndpoint": "unix:///var/run/containerd/containerd.sock",
        "providerID": "",
        "kubeletCgroups": "",
        "systemCgroups": "",
    }
    return json.dumps({"kubeletconfig": cfg}, separators=(",", ":")).encode()
