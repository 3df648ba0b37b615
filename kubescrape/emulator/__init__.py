"""A kubelet emulator: the secure port with x509/token authentication, RBAC authorization and payloads.

``Emulator`` (in :mod:`kubescrape.emulator.fleet`) is the programmatic API; :func:`run_command` is
``kubescrape emulate``; :func:`write_config` writes the Categraf config directory that scrapes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from kubescrape._signals import stop_on_signals
from kubescrape.errors import EmulatorError

if TYPE_CHECKING:
    from kubescrape.emulator.fleet import Emulator

__all__ = ["run_command", "write_config"]


def write_config(emu: Emulator, config_dir: Path, writer_url: str, *, interval: int = 15) -> Path:
    """Write a complete Categraf config directory for ``kubescrape run --config-dir``: the seed's
    ``config.toml`` sending to ``writer_url`` every ``interval`` seconds, and
    ``input.prometheus/prometheus.toml`` scraping every node of ``emu`` (its CA in ``tls_ca``, the bound
    ServiceAccount's token in ``bearer_token_file``). Call it once the nodes are bound: ports chosen by
    the system (``--port 0``) are only known then. Returns the path of ``config.toml``.
    """
    seed = resources.files("kubescrape").joinpath("data", "categraf", "config.toml").read_text()
    main = re.sub(r'(?m)^url = "[^"]*"', f'url = "{writer_url}"', seed, count=1)
    main = re.sub(r"(?m)^interval = \d+", f"interval = {interval}", main, count=1)
    header = ("# Categraf config.toml written by `kubescrape emulate --write-config`:\n"
              "# the agent sends every sample to the [[writers]] url below.\n")
    inputs = config_dir / "input.prometheus"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / "prometheus.toml").write_text(emu.prometheus_toml())
    main_file = config_dir / "config.toml"
    main_file.write_text(header + main)
    return main_file


def _describe(emu: Emulator) -> str:
    admin_crt, admin_key = emu.admin_cert_paths()
    first = emu.nodes[0]
    lines = [f"kubelet emulator {emu.version}: {len(emu.nodes)} node(s), {emu.pods} pods each"]
    for spec in emu.nodes[:5]:
        extra = []
        if spec.healthz_port is not None:
            extra.append(f"healthz http://{spec.address}:{spec.healthz_port}/healthz")
        if spec.proxy_port is not None:
            extra.append(f"kube-proxy http://{spec.address}:{spec.proxy_port}/metrics")
        lines.append(f"  {spec.name}: {spec.url}  " + "  ".join(extra))
    if len(emu.nodes) > 5:
        lines.append(f"  … and {len(emu.nodes) - 5} more")
    if emu.apiserver is not None:
        lines.append(f"apiserver:   {emu.apiserver.url}  "
                     f"(kubectl --kubeconfig {emu.kubeconfig_path} get pods -A)")
    lines += [
        f"CA:          {emu.ca_path}",
        f"admin cert:  {admin_crt} / {admin_key}",
        f"bound token: {emu.scrape_token_path()}",
        f"403 token:   {emu.token_path('default', 'unbound')}",
        f"try: curl --cacert {emu.ca_path} -H \"Authorization: Bearer $(cat {emu.scrape_token_path()})\" "
        f"{first.url}/metrics",
    ]
    return "\n".join(lines)


async def _serve(emu: Emulator, duration: float, config: tuple[Path, str, int] | None = None) -> None:
    with stop_on_signals() as stop:
        async with emu:
            print(_describe(emu), file=sys.stderr, flush=True)
            if config is not None:
                config_dir, writer_url, interval = config
                try:
                    write_config(emu, config_dir, writer_url, interval=interval)
                except OSError as e:
                    raise EmulatorError(f"cannot write the config directory {config_dir}: {e.strerror or e}",
                                        "pass a writable directory to --write-config") from e
                print(f"wrote {config_dir}/config.toml (writer {writer_url}) and "
                      f"{config_dir}/input.prometheus/prometheus.toml\n"
                      f"next: kubescrape run --config-dir {config_dir}  (and a receiver at that URL: "
                      "kubescrape receive)", file=sys.stderr, flush=True)
            if duration > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration)
            else:
                await stop.wait()
    print(f"served {emu.stats.requests} requests ({dict(emu.stats.by_status)}), "
          f"{emu.stats.body_bytes / 1e6:.1f} MB", file=sys.stderr)


def run_command(
    *,
    state_dir: Path,
    nodes: int,
    pods: int,
    churn: float,
    address: str,
    port: int,
    healthz_port: int,
    proxy_port: int,
    rbac_files: list[Path],
    kubelet_version: str,
    token_ttl: float,
    anonymous: bool,
    print_config: bool,
    duration: float,
    write_config: Path | None = None,
    writer_url: str = "http://127.0.0.1:9201/api/v1/write",
    interval: int = 15,
    apiserver_port: int | None = None,
    node_churn: float = 0.0,
) -> int:
    """``kubescrape emulate``: returns the process exit code."""
    from kubescrape.emulator.fleet import Emulator
    from kubescrape.errors import KubescrapeError

    try:
        emu = Emulator(
            state_dir, nodes=nodes, pods=pods, churn=churn, address=address, port=port,
            healthz_port=healthz_port or None, proxy_port=proxy_port or None, rbac_files=rbac_files,
            kubelet_version=kubelet_version, token_ttl=token_ttl, anonymous=anonymous,
            apiserver_port=apiserver_port, node_churn=node_churn,
        )
        if print_config:
            emu.prepare_state()
            print(emu.prometheus_toml())
            return 0
        if write_config is not None and interval < 1:
            raise EmulatorError(f"--interval {interval} is not a scrape interval", "use --interval 1 or more")
        config = (write_config, writer_url, interval) if write_config is not None else None
        asyncio.run(_serve(emu, duration, config))
    except KubescrapeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
