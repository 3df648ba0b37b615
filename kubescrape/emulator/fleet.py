"""A fleet of emulated nodes in one event loop, and the state directory they share.

State directory layout (created if missing, reused if present)::

    ca.crt                      the cluster CA (what scrapers put in tls_ca / ca_file)
    pki/ca.key                  its key
    pki/admin.crt|key           client certificate CN=admin, O=system:masters
    pki/nodes/<node>.crt|key    serving certificate of each node (its IP and name as SANs)
    pki/sa.key                  ServiceAccount token signing key
    tokens/<namespace>/<name>   one token per ServiceAccount found in the RBAC YAML
    tokens/default/unbound      a ServiceAccount with no binding (authenticates, then 403)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from cryptography import x509

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.authn import Authenticator
from kubescrape.emulator.authz import KubeletVersion, Policy, RBACAuthorizer, default_policy, load_policy
from kubescrape.emulator.pki import CertificateAuthority, CertPair, server_ssl_context
from kubescrape.emulator.server import NodePayloadsLike, NodeServer, NodeSpec, ServeStats
from kubescrape.emulator.tokens import ServiceAccountRef, TokenIssuer, TokenStore
from kubescrape.errors import EmulatorError

PayloadFactory = Callable[[NodeSpec, int], NodePayloadsLike]

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
            crt, key = pki / "nodes" / f"{spec.name}.crt", pki / "nodes" / f"{spec.name}.key"
            pair: CertPair | None = None
            if crt.exists() and key.exists():
                stored = CertPair(crt.read_bytes(), key.read_bytes())
                if _cert_matches(stored, self.ca, spec.address, spec.name):
                    pair = stored
            if pair is None:
                pair = self.ca.issue_server(spec.name, ips=[spec.address], dns_names=[spec.name, "localhost"])
                pair.write(crt, key)
            self._node_pairs[spec.name] = pair
        self.issuer = TokenIssuer.load_or_create(pki / "sa.key", clock=self.clock)
        self.token_store = TokenStore(self.state_dir / "tokens", self.issuer,
                                      self.policy.all_service_accounts(), ttl=self.token_ttl)
        self.token_store.ensure()

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
        authn = Authenticator(self.issuer, anonymous=self.anonymous)
        authz = RBACAuthorizer(self.policy)
        try:
            for spec in self.specs:
                server = NodeServer(
                    spec, ssl_context=server_ssl_context(self._node_pairs[spec.name], self.ca.cert_pem),
                    authenticator=authn, authorizer=authz, payloads=self._payloads_for(spec),
                    version=self.version, fine_grained=self.fine_grained, pods=self.pods, clock=self.clock,
                    cache_ttl=self.cache_ttl, stats=self.stats,
                )
                await server.start()
                self.servers.append(server)
        except BaseException:
            await self.stop()
            raise
        self._rotation = asyncio.create_task(self.token_store.rotate_forever(), name="token rotation")

    async def stop(self) -> None:
        """Close every listener and stop token rotation."""
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
