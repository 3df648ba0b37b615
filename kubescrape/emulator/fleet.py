"""A fleet of emulated nodes in one event loop, and the state directory they share.

State directory layout (created if missing, reused if present)::

    ca.crt                      the cluster CA (what scrapers put in tls_ca / ca_file)
    pki/ca.key                  its key
    pki/admin.crt|key           client certificate CN=admin, O=system:masters
    pki/nodes/<node>.crt|key    serving certificate of each node (its IP and name as SANs)
    pki/sa.key                  ServiceAccount token signing key
    tokens/<namespace>/<name>   one token per ServiceAccount found in the RBAC YAML
    tokens/default/unbound      a ServiceAccount with no binding (authenticates, then 403)
    pki/apiserver.crt|key       the stand-in apiserver's serving certificate (with ``apiserver_port``)
    pki/apiserver-kubelet-client.crt|key   what the apiserver presents to kubelets (nodes/proxy)
    kubeconfig                  server URL, CA and the admin client certificate: any client works

With ``apiserver_port`` the fleet also runs a stand-in kube-apiserver
(:mod:`kubescrape.emulator.apiserver`) whose objects follow the kubelets (pods, churn, nodes added and
removed), and serves the metrics of annotated application pods on their loopback pod IPs
(:mod:`kubescrape.emulator.apps`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from cryptography import x509

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.apiobjects import ClusterSync, NodeView
from kubescrape.emulator.apiserver import ApiServer
from kubescrape.emulator.apistore import Store
from kubescrape.emulator.apps import AppServers, app_endpoints
from kubescrape.emulator.authn import Authenticator
from kubescrape.emulator.authz import KubeletVersion, Policy, RBACAuthorizer, default_policy, load_policy
from kubescrape.emulator.pki import (
    CertificateAuthority,
    CertPair,
    client_ssl_context,
    server_ssl_context,
    write_private,
)
from kubescrape.emulator.server import NodePayloadsLike, NodeServer, NodeSpec, ServeStats
from kubescrape.emulator.tokens import ServiceAccountRef, TokenIssuer, TokenStore
from kubescrape.errors import EmulatorError

PayloadFactory = Callable[[NodeSpec, int], NodePayloadsLike]
log = logging.getLogger(__name__)

__all__ = ["Emulator", "PayloadFactory", "node_address"]

SEED_SERVICE_ACCOUNT = ServiceAccountRef("flashcat", "categraf-daemonset")


def node_address(k: int) -> str:
    """Loopback address of node ``k`` (1-based) in a fleet: 127.0.1.1 … 127.0.1.254, 127.0.2.1 …"""
    if k < 1 or k > 254 * 254:
        raise EmulatorError(f"node index {k} out of range", "use --nodes between 1 and 64516")
    return f"127.0.{1 + (k - 1) // 254}.{1 + (k - 1) % 254}"


def _default_payloads(spec: NodeSpec, pods: int, churn: float, clock: Clock,
                      version: KubeletVersion) -> NodePayloadsLike:
    # Imported by name: the payload generator is its own module and is loaded only when a node is hit.
    module = importlib.import_module("kubescrape.emulator.payloads")
    payloads: NodePayloadsLike = module.NodePayloads(
        spec.name, spec.address, pods, churn_per_min=churn, seed=spec.index, clock=clock,
        kubelet_version=str(version))
    return payloads


def _kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: kubescrape-emulator\n  cluster:\n"
        f"    server: {server}\n    certificate-authority-data: {b64(ca_pem)}\n"
        "users:\n- name: admin\n  user:\n"
        f"    client-certificate-data: {b64(cert_pem)}\n    client-key-data: {b64(key_pem)}\n"
        "contexts:\n- name: admin@kubescrape-emulator\n  context:\n"
        "    cluster: kubescrape-emulator\n    user: admin\n"
        "current-context: admin@kubescrape-emulator\n"
    )


def _cert_matches(pair: CertPair, ca: CertificateAuthority, address: str, name: str) -> bool:
    """True when a stored serving certificate was issued by ``ca`` for this address and name."""
    try:
        cert = pair.certificate
        cert.verify_directly_issued_by(ca.cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # unparsable, foreign or SAN-less: reissue
        return False
    ips = san.get_values_for_type(x509.IPAddress)
    return ipaddress.ip_address(address) in ips and name in san.get_values_for_type(x509.DNSName)


class Emulator:
    """M emulated kubelets sharing one CA, one token issuer and one RBAC policy.

    Use as an async context manager (or ``await start()`` / ``await stop()``). ``port=0`` (and
    ``healthz_port=0``/``proxy_port=0``) picks free ports; ``None`` turns a plain-HTTP listener off.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        nodes: int = 1,
        pods: int = 30,
        churn: float = 0.0,
        address: str = "127.0.0.1",
        port: int = 10250,
        healthz_port: int | None = 10248,
        proxy_port: int | None = 10249,
        rbac_files: Sequence[str | Path] = (),
        kubelet_version: str = "1.29.0",
        token_ttl: float = 0.0,
        anonymous: bool = False,
        fine_grained: bool | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cache_ttl: float = 1.0,
        payload_factory: PayloadFactory | None = None,
        apiserver_port: int | None = None,
        apiserver_address: str = "127.0.0.1",
        app_metrics: bool | None = None,
        node_churn: float = 0.0,
        sync_interval: float = 0.25,
        bookmark_interval: float = 60.0,
        watch_history: int = 20_000,
    ) -> None:
        if nodes < 1:
            raise EmulatorError(f"--nodes {nodes} is not a node count", "use --nodes 1 or more")
        if pods < 0:
            raise EmulatorError(f"--pods {pods} is negative", "use --pods 0 or more")
        self.state_dir = Path(state_dir)
        self.node_count = nodes
        self.pods = pods
        self.churn = churn
        self.address = address
        self.port = port
        self.healthz_port = healthz_port
        self.proxy_port = proxy_port
        self.rbac_files = list(rbac_files)
        self.version = KubeletVersion.parse(kubelet_version)
        self.token_ttl = token_ttl
        self.anonymous = anonymous
        self.fine_grained = fine_grained
        self.clock = clock
        self.cache_ttl = cache_ttl
        self._payload_factory = payload_factory
        self.stats = ServeStats()
        self.specs = [
            NodeSpec(k, f"node-{k}", address if nodes == 1 else node_address(k), port, healthz_port,
                     proxy_port)
            for k in range(1, nodes + 1)
        ]
        self.servers: list[NodeServer] = []
        self.policy: Policy | None = None
        self.ca: CertificateAuthority | None = None
        self.issuer: TokenIssuer | None = None
        self.token_store: TokenStore | None = None
        self._node_pairs: dict[str, CertPair] = {}
        self._rotation: asyncio.Task[None] | None = None
        self.apiserver_port = apiserver_port
        self.apiserver_address = apiserver_address
        self.app_metrics = apiserver_port is not None if app_metrics is None else app_metrics
        self.node_churn = node_churn
        self.sync_interval = sync_interval
        self.bookmark_interval = bookmark_interval
        self.watch_history = watch_history
        self.apiserver: ApiServer | None = None
        self.store: Store | None = None
        self.apps: AppServers | None = None
        self._cluster: ClusterSync | None = None
        self._cluster_task: asyncio.Task[None] | None = None
        self._created: dict[str, float] = {}
        self._authn: Authenticator | None = None
        self._authz: RBACAuthorizer | None = None
        self._removed: list[NodeSpec] = []

    # --- state ---------------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        """The CA certificate scrapers must trust."""
        return self.state_dir / "ca.crt"

    def admin_cert_paths(self) -> tuple[Path, Path]:
        """``(cert, key)`` of the ``CN=admin, O=system:masters`` client certificate."""
        return self.state_dir / "pki" / "admin.crt", self.state_dir / "pki" / "admin.key"

    def token_path(self, namespace: str, name: str) -> Path:
        """The token file of ServiceAccount ``namespace/name``."""
        return self.state_dir / "tokens" / namespace / name

    def scrape_token_path(self) -> Path:
        """The token a scraper should use: the seed's ServiceAccount, or the first bound one."""
        policy = self.policy or self._load_policy()
        accounts = policy.all_service_accounts()
        if SEED_SERVICE_ACCOUNT in [ServiceAccountRef(a.namespace, a.name) for a in accounts] \
                and policy.is_bound(SEED_SERVICE_ACCOUNT):
            return self.token_path(SEED_SERVICE_ACCOUNT.namespace, SEED_SERVICE_ACCOUNT.name)
        for sa in accounts:
            if policy.is_bound(sa):
                return self.token_path(sa.namespace, sa.name)
        raise EmulatorError("no ServiceAccount in the RBAC policy is bound to a role",
                            "add a ClusterRoleBinding for a ServiceAccount (see kubescrape/data/auth.yaml)")

    def _load_policy(self) -> Policy:
        policy = default_policy()
        policy.merge(load_policy(self.rbac_files))
        return policy

    def prepare_state(self) -> None:
        """Create or reuse the CA, certificates, signing key and token files (synchronous)."""
        self.policy = self._load_policy()
        pki = self.state_dir / "pki"
        try:
            pki.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmulatorError(f"cannot create the state directory {self.state_dir}: {e}",
                                "pass a writable --state-dir") from e
        ca_key = pki / "ca.key"
        if self.ca_path.exists() and ca_key.exists():
            self.ca = CertificateAuthority.load(self.ca_path, ca_key)
        else:
            self.ca = CertificateAuthority.create()
            self.ca.save(self.ca_path, ca_key)
        admin_crt, admin_key = self.admin_cert_paths()
        admin_ok = False
        if admin_crt.exists() and admin_key.exists():
            with contextlib.suppress(Exception):
                stored = CertPair(admin_crt.read_bytes(), admin_key.read_bytes())
                stored.certificate.verify_directly_issued_by(self.ca.cert)
                admin_ok = True
        if not admin_ok:
            self.ca.issue_client("admin", organizations=["system:masters"]).write(admin_crt, admin_key)
        for spec in self.specs:
            self._node_pairs[spec.name] = self._serving_pair(f"nodes/{spec.name}", spec.address, spec.name,
                                                             [spec.name, "localhost"])
        self.issuer = TokenIssuer.load_or_create(pki / "sa.key", clock=self.clock)
        self.token_store = TokenStore(self.state_dir / "tokens", self.issuer,
                                      self.policy.all_service_accounts(), ttl=self.token_ttl)
        self.token_store.ensure()

    def _serving_pair(self, stem: str, address: str, name: str, dns_names: list[str]) -> CertPair:
        """The serving certificate ``pki/<stem>.crt|key``, reused when it still matches."""
        assert self.ca is not None
        pki = self.state_dir / "pki"
        crt, key = pki / f"{stem}.crt", pki / f"{stem}.key"
        if crt.exists() and key.exists():
            stored = CertPair(crt.read_bytes(), key.read_bytes())
            if _cert_matches(stored, self.ca, address, name):
                return stored
        pair = self.ca.issue_server(name, ips=[address], dns_names=dns_names)
        pair.write(crt, key)
        return pair

    # --- serving -------------------------------------------------------------------------------

    def _payloads_for(self, spec: NodeSpec) -> Callable[[], NodePayloadsLike]:
        if self._payload_factory is not None:
            factory = self._payload_factory
            return lambda: factory(spec, self.pods)
        return lambda: _default_payloads(spec, self.pods, self.churn, self.clock, self.version)

    async def start(self) -> None:
        """Prepare state and bind every node's listeners."""
        self.prepare_state()
        assert self.policy is not None and self.ca is not None and self.issuer is not None
        assert self.token_store is not None
        self._authn = Authenticator(self.issuer, anonymous=self.anonymous)
        self._authz = RBACAuthorizer(self.policy)
        try:
            for spec in self.specs:
                await self._start_node(spec)
            self._rotation = asyncio.create_task(self.token_store.rotate_forever(), name="token rotation")
            if self.apiserver_port is not None:
                await self._start_apiserver()
            if self.app_metrics:
                self.apps = AppServers(clock=self.clock)
                await self.apps.start()
            if self.apiserver_port is not None or self.app_metrics:
                await self.sync_cluster()
                self._cluster_task = asyncio.create_task(self._cluster_loop(), name="cluster sync")
        except BaseException:
            await self.stop()
            raise

    async def _start_node(self, spec: NodeSpec) -> NodeServer:
        assert self.ca is not None and self._authn is not None and self._authz is not None
        server = NodeServer(
            spec, ssl_context=server_ssl_context(self._node_pairs[spec.name], self.ca.cert_pem),
            authenticator=self._authn, authorizer=self._authz, payloads=self._payloads_for(spec),
            version=self.version, fine_grained=self.fine_grained, pods=self.pods, clock=self.clock,
            cache_ttl=self.cache_ttl, stats=self.stats,
        )
        await server.start()
        self.servers.append(server)
        self._created.setdefault(spec.name, self.clock.time())
        return server

    async def _start_apiserver(self) -> None:
        assert self.ca is not None and self.issuer is not None and self._authz is not None
        address = self.apiserver_address
        pair = self._serving_pair("apiserver", address, "kube-apiserver", [
            "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", "localhost"])
        client = self.ca.issue_client("kube-apiserver-kubelet-client", organizations=["system:masters"])
        client.write(self.state_dir / "pki" / "apiserver-kubelet-client.crt",
                     self.state_dir / "pki" / "apiserver-kubelet-client.key")
        self.store = Store(history=self.watch_history)
        self._cluster = ClusterSync(self.store, created=self.clock.time())
        self.apiserver = ApiServer(
            self.store, address=address, port=self.apiserver_port or 0,
            ssl_context=server_ssl_context(pair, self.ca.cert_pem),
            # The apiserver's default --anonymous-auth=true: no credentials is system:anonymous (then 403).
            authenticator=Authenticator(self.issuer, anonymous=True), authorizer=self._authz,
            kubelet_ssl=client_ssl_context(self.ca.cert_pem, client), node_address=self._node_address,
            version=str(self.version), bookmark_interval=self.bookmark_interval, clock=self.clock)
        await self.apiserver.start()
        crt, key = self.admin_cert_paths()
        write_private(self.kubeconfig_path, _kubeconfig(
            self.apiserver.url, self.ca.cert_pem, crt.read_bytes(), key.read_bytes()).encode(), 0o600)

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig authenticating as ServiceAccount ``namespace/name`` with its current token."""
        assert self.apiserver is not None and self.ca is not None
        token = self.token_path(namespace, name).read_text().strip()
        text = self.kubeconfig_path.read_text().split("users:")[0] + (
            f"users:\n- name: admin\n  user:\n    token: {token}\n"
            "contexts:\n- name: admin@kubescrape-emulator\n  context:\n"
            "    cluster: kubescrape-emulator\n    user: admin\n"
            "current-context: admin@kubescrape-emulator\n")
        path = self.state_dir / "kubeconfigs" / f"{namespace}.{name}"
        write_private(path, text.encode(), 0o600)
        return path

    def _node_address(self, name: str) -> tuple[str, int] | None:
        for s in self.servers:
            if s.spec.name == name:
                return s.spec.address, s.spec.port
        return None

    @property
    def kubeconfig_path(self) -> Path:
        """The admin kubeconfig of the stand-in apiserver."""
        return self.state_dir / "kubeconfig"

    def node_views(self) -> list[NodeView]:
        """What the apiserver shows of each running node (reading its pods applies due churn)."""
        return [NodeView(s.spec.index, s.spec.name, s.spec.address, s.spec.port, str(self.version),
                         self._created.get(s.spec.name, 0.0), s.payloads.pods_json()) for s in self.servers]

    async def sync_cluster(self) -> int:
        """Bring the apiserver's objects and the application listeners in step with the nodes now."""
        views = self.node_views()
        changes = 0
        if self._cluster is not None:
            changes = self._cluster.sync(views)
        if self.apps is not None:
            pods = self._cluster.pods() if self._cluster is not None else [
                item for v in views for item in json.loads(v.pods_json).get("items", ())]
            await self.apps.sync(app_endpoints(pods))
        return changes

    async def _cluster_loop(self) -> None:
        """Follow pod churn and run the node add/remove schedule; a failed round is logged, not fatal."""
        next_node_event = self.clock.monotonic() + self.node_churn
        while True:
            await self.clock.sleep(self.sync_interval)
            try:
                if self.node_churn > 0 and self.clock.monotonic() >= next_node_event:
                    next_node_event = self.clock.monotonic() + self.node_churn
                    if self._removed:
                        await self.add_node()
                    elif len(self.servers) > 1:
                        await self.remove_node(self.servers[-1].spec.name)
                await self.sync_cluster()
            except Exception:
                log.exception("emulated cluster sync failed; retrying in %.2fs", self.sync_interval)

    async def add_node(self) -> NodeSpec:
        """Start one more node (the last removed one, else the next index) and show it in the apiserver."""
        assert self.ca is not None
        if self._removed:
            spec = self._removed.pop()
        else:
            k = max((s.index for s in self.specs), default=0) + 1
            spec = NodeSpec(k, f"node-{k}", node_address(k), self.port if self.port else 0,
                            self.healthz_port, self.proxy_port)
            self._node_pairs[spec.name] = self._serving_pair(f"nodes/{spec.name}", spec.address, spec.name,
                                                             [spec.name, "localhost"])
        self.specs.append(spec)
        self._created[spec.name] = self.clock.time()
        await self._start_node(spec)
        await self.sync_cluster()
        return spec

    async def remove_node(self, name: str) -> None:
        """Stop node ``name``; it disappears from the apiserver with its pods."""
        for server in [s for s in self.servers if s.spec.name == name]:
            self.servers.remove(server)
            self.specs.remove(server.spec)
            self._removed.append(server.spec)
            await server.stop()
        await self.sync_cluster()

    async def stop(self) -> None:
        """Close every listener and stop token rotation."""
        if self._cluster_task is not None:
            self._cluster_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cluster_task
            self._cluster_task = None
        if self.apiserver is not None:
            await self.apiserver.stop()
            self.apiserver = None
        if self.apps is not None:
            await self.apps.stop()
            self.apps = None
        if self._rotation is not None:
            self._rotation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotation
            self._rotation = None
        servers, self.servers = self.servers, []
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def nodes(self) -> list[NodeSpec]:
        """The nodes (with their actual ports once started)."""
        return self.specs

    # --- configuration for scrapers --------------------------------------------------------------

    def prometheus_toml(self) -> str:
        """A Categraf ``input.prometheus/prometheus.toml`` scraping every node, as in the seed."""
        token = self.scrape_token_path().resolve()
        ca = self.ca_path.resolve()

        def urls(path: str) -> str:
            return ", ".join(f'"{s.url}{path}"' for s in self.specs)

        parts = [
            "# Categraf input.prometheus: scrape every emulated kubelet (kubescrape emulate --print-config)",
        ]
        if all(s.proxy_port is not None for s in self.specs):
            proxy_urls = ", ".join(f'"http://{s.address}:{s.proxy_port}/metrics"' for s in self.specs)
            parts.append(f'[[instances]]\nurls = [{proxy_urls}]\nlabels = {{ job="kube-proxy" }}\n')
        for path, job in (("/metrics", "kubelet"), ("/metrics/cadvisor", "cadvisor")):
            parts.append(
                f"[[instances]]\nurls = [{urls(path)}]\n"
                f'bearer_token_file = "{token}"\nuse_tls = true\ntls_ca = "{ca}"\n'
                f'labels = {{ job="{job}" }}\n'
            )
        return "\n".join(parts)

    def prometheus_yml(self, namespace: str = "monitoring", name: str = "kubescrape") -> str:
        """A Prometheus configuration that discovers this fleet through the stand-in apiserver as
        ServiceAccount ``namespace/name``: the kubelets directly and through ``nodes/proxy``, and the pods
        annotated ``prometheus.io/scrape`` (what ``kubescrape run --config`` and vmagent take as they are)."""
        assert self.apiserver is not None, "start the fleet with apiserver_port first"
        token = self.token_path(namespace, name).resolve()
        ca = self.ca_path.resolve()
        sd = (f"  kubernetes_sd_configs:\n  - role: ROLE\n    api_server: {self.apiserver.url}\n"
              f"    tls_config: {{ca_file: {ca}}}\n    bearer_token_file: {token}\n")
        tls = f"  scheme: https\n  tls_config: {{ca_file: {ca}}}\n  bearer_token_file: {token}\n"
        api_host = self.apiserver.url.removeprefix("https://")
        return f"""# Prometheus configuration for the emulated cluster (kubescrape emulate)
global: {{scrape_interval: 15s, scrape_timeout: 10s}}
scrape_configs:
- job_name: kubelet
{tls}{sd.replace("ROLE", "node")}  relabel_configs:
  - {{action: labelmap, regex: __meta_kubernetes_node_label_(.+)}}
- job_name: cadvisor
  metrics_path: /metrics/cadvisor
{tls}{sd.replace("ROLE", "node")}  relabel_configs:
  - {{action: labelmap, regex: __meta_kubernetes_node_label_(.+)}}
- job_name: cadvisor-via-apiserver
{tls}{sd.replace("ROLE", "node")}  relabel_configs:
  - {{target_label: __address__, replacement: "{api_host}"}}
  - {{source_labels: [__meta_kubernetes_node_name], regex: (.+), target_label: __metrics_path__,
     replacement: /api/v1/nodes/$1/proxy/metrics/cadvisor}}
- job_name: pods
{sd.replace("ROLE", "pod")}  relabel_configs:
  - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}}
  - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], target_label: __metrics_path__,
     regex: (.+)}}
  - {{source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port],
     regex: '([^:]+)(?::\\d+)?;(\\d+)', replacement: $1:$2, target_label: __address__}}
  - {{action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}}
  - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
  - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
  - {{source_labels: [__meta_kubernetes_pod_node_name], target_label: node}}
"""
