"""Command line: argument handling only. Each command hands plain values to the module that does the job.

Every module a command needs is imported inside that command, so ``kubescrape run`` loads neither the
emulator, doctor, deploy, the demo nor rich. Help is rendered by typer's plain formatter (no rich): it is
cheaper to start, shows flags as flags, and leaves ``[[writers]]`` alone instead of reading it as markup.

``run``'s options are declared once, in :mod:`kubescrape.run_options`: the command below is built from that
table, and ``kubescrape run`` itself usually never gets here (:mod:`kubescrape.__main__` parses a plain run
line without typer).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from kubescrape.run_options import RUN_OPTIONS, RunOption, run_kwargs

# Kept equal to kubescrape.receiver.DEFAULT_LISTEN / DEFAULT_WRITE_URL (a test checks) without importing
# the receiver, which pulls in aiohttp, at CLI start-up.
RECEIVER_LISTEN = "127.0.0.1:9201"
RECEIVER_WRITE_URL = f"http://{RECEIVER_LISTEN}/api/v1/write"

app = typer.Typer(
    name="kubescrape",
    help="Scrape the kubelet securely and remote-write to Prometheus-compatible backends.\n\n"
    "A local tour, in three terminals: `kubescrape receive`, `kubescrape emulate --write-config conf`, "
    "`kubescrape run --config-dir conf`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def run(**values: Any) -> None:
    """Run the agent (or, with --test, scrape once and print)."""
    from kubescrape.agent import run_command

    raise typer.Exit(run_command(**run_kwargs(values)))


def _option(option: RunOption) -> Any:
    decls = (f"{option.flags[0]}/{option.negative}", *option.flags[1:]) if option.negative else option.flags
    return typer.Option(*decls, metavar=option.metavar, help=option.help, min=option.min)


# `run`'s parameters come from the one table that the typer-free fast path of __main__ parses too.
run.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                      annotation=Annotated[o.annotation, _option(o)])
    for o in RUN_OPTIONS
])
app.command(short_help="The agent: scrape, remote-write; --test scrapes once.")(run)


@app.command(short_help="A kubelet stand-in: TLS, tokens, RBAC, payloads.")
def emulate(
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="PKI, tokens and RBAC state (created if missing, reused if present).",
        ),
    ] = Path("kubelet-emulator"),
    nodes: Annotated[
        int, typer.Option("--nodes", metavar="N", help="Nodes to emulate; node k listens on 127.0.1.k.")
    ] = 1,
    pods: Annotated[int, typer.Option("--pods", metavar="N", help="Pods per node.")] = 30,
    churn: Annotated[
        float, typer.Option("--churn", metavar="N", help="Pods replaced per minute per node.")
    ] = 0.0,
    address: Annotated[
        str,
        typer.Option(
            "--address", metavar="IP", help="Listen address of node 1 (with --nodes > 1: 127.0.1.k)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Secure (HTTPS) port; 0 picks a free one.")
    ] = 10250,
    healthz_port: Annotated[
        int, typer.Option("--healthz-port", metavar="PORT", help="Healthz (HTTP) port; 0 = off.")
    ] = 10248,
    proxy_port: Annotated[
        int, typer.Option("--proxy-port", metavar="PORT", help="kube-proxy metrics (HTTP) port; 0 = off.")
    ] = 10249,
    rbac: Annotated[
        list[Path] | None,
        typer.Option(
            "--rbac",
            metavar="FILE",
            help="RBAC YAML (ClusterRole, ClusterRoleBinding, Role, RoleBinding, ServiceAccount); "
            "repeatable.",
        ),
    ] = None,
    kubelet_version: Annotated[
        str,
        typer.Option(
            "--kubelet-version", metavar="VERSION", help="Kubelet version whose 403 body format to use."
        ),
    ] = "1.29.0",
    token_ttl: Annotated[
        float,
        typer.Option("--token-ttl", metavar="SECONDS", help="Token lifetime; 0 = one year."),
    ] = 0.0,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous", help="Allow anonymous requests (user system:anonymous)."
        ),
    ] = False,
    write_config: Annotated[
        Path | None,
        typer.Option(
            "--write-config",
            metavar="DIR",
            help="Write a complete Categraf config directory (config.toml + "
            "input.prometheus/prometheus.toml) for `kubescrape run --config-dir DIR`, then serve.",
        ),
    ] = None,
    writer_url: Annotated[
        str,
        typer.Option(
            "--writer-url",
            metavar="URL",
            help="Remote-write URL written into config.toml by --write-config; the default is where "
            "`kubescrape receive` listens.",
        ),
    ] = RECEIVER_WRITE_URL,
    interval: Annotated[
        int,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="Scrape interval written into config.toml by --write-config.",
        ),
    ] = 15,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print only input.prometheus/prometheus.toml for every node, then exit "
            "(--write-config writes the whole directory).",
        ),
    ] = False,
    duration: Annotated[
        float,
        typer.Option("--duration", metavar="SECONDS", help="Stop after this long; 0 = until Ctrl-C."),
    ] = 0.0,
    apiserver_port: Annotated[
        int | None,
        typer.Option(
            "--apiserver-port",
            metavar="PORT",
            help="Also serve a stand-in kube-apiserver for the fleet on this port (6443 is usual; 0 picks "
            "one); writes a kubeconfig into the state directory.",
        ),
    ] = None,
    node_churn: Annotated[
        float,
        typer.Option(
            "--node-churn",
            metavar="SECONDS",
            help="With --apiserver-port: remove a node and add it back this often (watch events); 0 = never.",
        ),
    ] = 0.0,
    pending_serving_csr: Annotated[
        list[str] | None,
        typer.Option(
            "--pending-serving-csr",
            metavar="NODE",
            help="With --apiserver-port: NODE (or all) runs serverTLSBootstrap with its kubelet-serving CSR "
            "Pending: TLS on 10250 fails (alert internal_error) until `kubectl certificate approve`.",
        ),
    ] = None,
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
            write_config=write_config,
            writer_url=writer_url,
            interval=interval,
            apiserver_port=apiserver_port,
            node_churn=node_churn,
            pending_serving_csr=pending_serving_csr or [],
        )
    )


@app.command(short_help="A remote-write receiver for a local tour.")
def receive(
    listen: Annotated[
        str,
        typer.Option(
            "--listen", metavar="HOST:PORT", help="Address to receive remote write on; port 0 picks one."
        ),
    ] = RECEIVER_LISTEN,
    print_samples: Annotated[
        bool,
        typer.Option(
            "--print",
            help="Print every received sample to stdout as 'name{labels} value timestamp_ms' "
            "(other messages go to stderr).",
        ),
    ] = False,
    summary_interval: Annotated[
        float,
        typer.Option(
            "--summary-interval",
            metavar="SECONDS",
            help="Print a one-line summary this often while samples arrive; 0 = never.",
        ),
    ] = 5.0,
    max_series: Annotated[
        int,
        typer.Option(
            "--max-series", metavar="N", help="Series kept in memory; samples of further series are counted."
        ),
    ] = 100_000,
    duration: Annotated[
        float,
        typer.Option("--duration", metavar="SECONDS", help="Stop after this long; 0 = until Ctrl-C."),
    ] = 0.0,
) -> None:
    """A Prometheus remote-write receiver on this machine: the agent's destination for a local tour."""
    from kubescrape.receiver import run_command

    raise typer.Exit(
        run_command(
            listen=listen,
            print_samples=print_samples,
            summary_interval=summary_interval,
            max_series=max_series,
            duration=duration,
        )
    )


@app.command(short_help="Check a target step by step and print the fix.")
def doctor(
    url: Annotated[
        str | None, typer.Argument(metavar="URL", help="URL to check (instead of --config-dir).")
    ] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            "--config-dir", "-c", metavar="DIR", help="Check every target of this Categraf-layout config."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file", metavar="FILE", help="Bearer token file to send (a ServiceAccount token)."
        ),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", metavar="FILE", help="CA bundle (PEM) that signed the target's certificate."),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", metavar="FILE", help="Client certificate (PEM) for x509 authentication."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="Private key (PEM) of --cert.")
    ] = None,
    server_name: Annotated[
        str | None,
        typer.Option(
            "--server-name", metavar="NAME", help="Name to verify the certificate against (and send as SNI)."
        ),
    ] = None,
    insecure_skip_verify: Annotated[
        bool,
        typer.Option(
            "--insecure-skip-verify",
            help="Do not verify the target's certificate (the check still reports what it is).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Timeout of each network step.")
    ] = 5.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (one JSON document).")
    ] = False,
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


@app.command(short_help="Kubernetes manifests: a DaemonSet, or a sharded StatefulSet (--mode cluster).")
def manifests(
    namespace: Annotated[
        str, typer.Option("--namespace", metavar="NAME", help="Namespace of the agent's objects.")
    ] = "flashcat",
    writer_url: Annotated[
        str,
        typer.Option("--writer-url", metavar="URL", help="Remote-write URL written into config.toml."),
    ] = "http://prometheus.monitoring:9090/api/v1/write",
    image: Annotated[
        str,
        typer.Option(
            "--image",
            metavar="IMAGE",
            help="Container image of the DaemonSet (build it from the Dockerfile).",
        ),
    ] = "kubescrape:0.1.0",
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Write one file per manifest here instead of printing.",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="daemonset: one agent per node, node-local discovery through the kubelet's /pods; "
            "cluster: a StatefulSet of --replicas shards discovering through the apiserver.",
        ),
    ] = "daemonset",
    replicas: Annotated[
        int, typer.Option("--replicas", metavar="M", help="With --mode cluster: number of shards.")
    ] = 2,
) -> None:
    """Print (or write) ServiceAccount, RBAC, ConfigMaps and DaemonSet (or StatefulSet) for a cluster."""
    from kubescrape.deploy import run_command

    raise typer.Exit(
        run_command(namespace=namespace, writer_url=writer_url, image=image, output_dir=output_dir,
                    mode=mode, replicas=replicas)
    )


@app.command(short_help="Emulator + agent + receiver, live; no cluster needed.")
def demo(
    duration: Annotated[
        float,
        typer.Option("--duration", metavar="SECONDS", help="Seconds to run; 0 = until Ctrl-C."),
    ] = 0.0,
    pods: Annotated[int, typer.Option("--pods", metavar="N", help="Pods per emulated node.")] = 30,
    nodes: Annotated[
        int, typer.Option("--nodes", metavar="N", help="Emulated nodes (node k on 127.0.1.k).")
    ] = 1,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="Keep emulator and spool state here (default: a temporary directory).",
        ),
    ] = None,
    receiver: Annotated[
        str,
        typer.Option(
            "--receiver",
            metavar="KIND",
            help="auto (a real Prometheus when installed), prometheus, or embedded.",
        ),
    ] = "auto",
) -> None:
    """Emulated kubelet + agent + remote-write receiver on loopback, live summary; no cluster needed."""
    from kubescrape.demo import run_command

    raise typer.Exit(
        run_command(duration=duration, pods=pods, nodes=nodes, state_dir=state_dir, receiver=receiver)
    )


def main() -> None:
    """The typer command line (every command, help and errors); the ``kubescrape`` script and
    ``python -m kubescrape`` come here through :func:`kubescrape.__main__.main` unless it parsed a plain
    ``run`` itself."""
    app(prog_name="kubescrape")


if __name__ == "__main__":
    main()
