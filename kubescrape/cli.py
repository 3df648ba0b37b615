"""Command line: argument handling only. Each command hands plain values to the module that does the job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="kubescrape",
    help="Scrape the kubelet securely and remote-write to Prometheus-compatible backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def run(
    config_dir: Annotated[
        Path,
        typer.Option(
            "--config-dir",
            "-c",
            help="Categraf-layout config dir (config.toml, input.prometheus/prometheus.toml).",
        ),
    ] = Path("conf"),
    writer_url: Annotated[
        list[str] | None,
        typer.Option("--writer-url", help="Remote-write URL; repeatable; replaces [[writers]]."),
    ] = None,
    test: Annotated[
        bool, typer.Option("--test", help="Scrape every target once, print the samples, write nothing.")
    ] = False,
    listen: Annotated[
        str, typer.Option("--listen", help="Self-metrics address host:port ('' = off).")
    ] = "127.0.0.1:9101",
    spool_dir: Annotated[Path, typer.Option("--spool-dir", help="Directory of the durable spool.")] = Path(
        "spool"
    ),
    spool_max_bytes: Annotated[
        int,
        typer.Option(
            "--spool-max-bytes",
            help="Spool size limit per writer; oldest data is evicted (and counted) beyond it.",
        ),
    ] = 1 << 30,
    no_spool: Annotated[bool, typer.Option("--no-spool", help="Keep the queue in memory only.")] = False,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout", help="Seconds to flush on SIGTERM before leaving the rest in the spool."
        ),
    ] = 10.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    config_file: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE",
                     help="Prometheus configuration file (prometheus.yml), read instead of --config-dir."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="With --config: an option kubescrape lacks is an error.")
    ] = False,
) -> None:
    """Run the agent (or, with --test, scrape once and print)."""
    from kubescrape.agent import run_command

    raise typer.Exit(
        run_command(
            config_dir=config_dir,
            writer_urls=writer_url or [],
            test=test,
            listen=listen,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            spool=not no_spool,
            shutdown_timeout=shutdown_timeout,
            log_level=log_level,
            config_file=config_file,
            strict=strict,
        )
    )


@app.command()
def emulate(
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir", help="PKI, tokens and RBAC state (created if missing, reused if present)."
        ),
    ] = Path("kubelet-emulator"),
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes to emulate; node k listens on 127.0.1.k.")] = 1,
    pods: Annotated[int, typer.Option("--pods", help="Pods per node.")] = 30,
    churn: Annotated[float, typer.Option("--churn", help="Pods replaced per minute per node.")] = 0.0,
    address: Annotated[
        str, typer.Option("--address", help="Listen address of node 1 (with --nodes > 1: 127.0.1.k).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Secure (HTTPS) port.")] = 10250,
    healthz_port: Annotated[
        int, typer.Option("--healthz-port", help="Healthz (HTTP) port; 0 = off.")
    ] = 10248,
    proxy_port: Annotated[
        int, typer.Option("--proxy-port", help="kube-proxy metrics (HTTP) port; 0 = off.")
    ] = 10249,
    rbac: Annotated[
        list[Path] | None,
        typer.Option(
            "--rbac",
            help="RBAC YAML files (ClusterRole, ClusterRoleBinding, Role, RoleBinding, ServiceAccount).",
        ),
    ] = None,
    kubelet_version: Annotated[
        str, typer.Option("--kubelet-version", help="Kubelet version whose 403 body format to use.")
    ] = "1.29.0",
    token_ttl: Annotated[
        float, typer.Option("--token-ttl", help="Token lifetime in seconds (0 = 1 year).")
    ] = 0.0,
    anonymous: Annotated[
        bool, typer.Option("--anonymous", help="Allow anonymous requests (user system:anonymous).")
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print a Categraf prometheus.toml that scrapes every node, then exit."
        ),
    ] = False,
    duration: Annotated[
        float, typer.Option("--duration", help="Stop after this many seconds (0 = until Ctrl-C).")
    ] = 0.0,
) -> None:
    """Run a kubelet emulator: TLS, x509/token authn, RBAC authz, realistic payloads."""
    from kubescrape.emulator import run_command

    raise typer.Exit(
        run_command(
            state_dir=state_dir,
            nodes=nodes,
            pods=pods,
            churn=churn,
            address=address,
            port=port,
            healthz_port=healthz_port,
            proxy_port=proxy_port,
            rbac_files=rbac or [],
            kubelet_version=kubelet_version,
            token_ttl=token_ttl,
            anonymous=anonymous,
            print_config=print_config,
            duration=duration,
        )
    )


@app.command()
def doctor(
    url: Annotated[str | None, typer.Argument(help="URL to check (instead of --config-dir).")] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option("--config-dir", "-c", help="Check every target of this Categraf-layout config."),
    ] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file")] = None,
    ca: Annotated[Path | None, typer.Option("--ca")] = None,
    cert: Annotated[Path | None, typer.Option("--cert")] = None,
    key: Annotated[Path | None, typer.Option("--key")] = None,
    server_name: Annotated[str | None, typer.Option("--server-name")] = None,
    insecure_skip_verify: Annotated[bool, typer.Option("--insecure-skip-verify")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 5.0,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="Check every target of this Prometheus config file."),
    ] = None,
) -> None:
    """Diagnose scrape targets step by step and print the fix for the first failure."""
    from kubescrape.doctor import run_command

    raise typer.Exit(
        run_command(
            url=url,
            config_dir=config_file or config_dir,
            token_file=token_file,
            ca=ca,
            cert=cert,
            key=key,
            server_name=server_name,
            insecure_skip_verify=insecure_skip_verify,
            timeout=timeout,
            json_output=json_output,
        )
    )


@app.command()
def manifests(
    namespace: Annotated[str, typer.Option("--namespace")] = "flashcat",
    writer_url: Annotated[
        str, typer.Option("--writer-url")
    ] = "http://prometheus.monitoring:9090/api/v1/write",
    image: Annotated[str, typer.Option("--image")] = "kubescrape:0.1.0",
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write one file per manifest here instead of printing."),
    ] = None,
) -> None:
    """Print (or write) ServiceAccount, RBAC, ConfigMaps and DaemonSet for a real cluster."""
    from kubescrape.deploy import run_command

    raise typer.Exit(
        run_command(namespace=namespace, writer_url=writer_url, image=image, output_dir=output_dir)
    )


@app.command()
def demo(
    duration: Annotated[float, typer.Option("--duration", help="Seconds to run (0 = until Ctrl-C).")] = 0.0,
    pods: Annotated[int, typer.Option("--pods")] = 30,
    nodes: Annotated[int, typer.Option("--nodes")] = 1,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Keep emulator and spool state here (default: a temporary directory)."
        ),
    ] = None,
    receiver: Annotated[
        str,
        typer.Option(
            "--receiver", help="auto (a real Prometheus when installed), prometheus, or embedded."
        ),
    ] = "auto",
) -> None:
    """Emulated kubelet + agent + remote-write receiver on loopback, live summary; no cluster needed."""
    from kubescrape.demo import run_command

    raise typer.Exit(
        run_command(duration=duration, pods=pods, nodes=nodes, state_dir=state_dir, receiver=receiver)
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
