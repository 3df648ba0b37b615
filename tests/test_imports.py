"""Imports inside kubescrape/ run one way: no module imports, directly or through others, one that
imports it back — at module level or inside a function. Imports only for the type checker
(``if TYPE_CHECKING:``) do not run and are not counted."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kubescrape"


def import_graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        graph[name].add(f"{node.module}.{alias.name}")
                if node.module in modules:
                    graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
    return graph


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert "kubescrape.remote_write.ledger" in graph["kubescrape.remote_write.spool"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "else:\n    import y\ndef f():\n    import z\n")
    names = {a.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"y", "z"}


def test_delivery_imports_run_one_way() -> None:
    graph = import_graph()
    rw = "kubescrape.remote_write"
    later = {f"{rw}.{m}" for m in ("memory", "spool", "sender", "dispatcher", "queue")}
    assert not graph[f"{rw}.ledger"] & later
    assert f"{rw}.queue" not in graph[f"{rw}.spool"] | graph[f"{rw}.sender"] | graph[f"{rw}.dispatcher"]
    assert f"{rw}.dispatcher" not in graph[f"{rw}.sender"]


# ---- the run path stays lean ----------------------------------------------------------------------------

ROOT = PACKAGE.parent

# Started as `python -m kubescrape run …`; when the first scrape has been appended, it records the modules
# loaded so far and stops the agent with SIGTERM, as an operator would.
RUN_PROBE = """\
import gc, mimetypes, os, signal, sys
from kubescrape.scrape import loop

first = loop.ScrapeLoop.scrape_and_append
loaded = []
state = []

async def scrape_and_append(self):
    report = await first(self)
    if not loaded:
        loaded.extend(sorted(sys.modules))
        state.extend([gc.isenabled(), gc.get_freeze_count() > 0, mimetypes.inited])
        os.kill(os.getpid(), signal.SIGTERM)
    return report

loop.ScrapeLoop.scrape_and_append = scrape_and_append
sys.argv = ["kubescrape", *sys.argv[1:]]
from kubescrape.__main__ import main
try:
    main()
finally:
    sys.stderr.write("\\nMODULES " + " ".join(loaded) + "\\n")
    sys.stderr.write("STATE " + " ".join(map(str, state)) + "\\n")
"""

# Not needed to scrape a Categraf configuration without discovery (each is imported by what needs it).
NOT_ON_THE_RUN_PATH = ("typer", "click", "rich", "yaml", "google.protobuf", "pydantic", "pydantic_core",
                       "kubescrape.config.schema", "kubescrape.discovery",
                       "kubescrape.scrape.discovered", "kubescrape.cli", "kubescrape.doctor",
                       "kubescrape.emulator", "kubescrape.deploy", "kubescrape.demo", "kubescrape.receiver",
                       "logging.handlers")


def _serve_metrics() -> tuple[ThreadingHTTPServer, str]:
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE up_probe gauge\nup_probe 1\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/metrics"


def test_kubescrape_run_scrapes_a_categraf_config_without_the_other_commands_modules(tmp_path: Path) -> None:
    server, url = _serve_metrics()
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    (conf / "config.toml").write_text('[global]\nhostname = "node-1"\ninterval = 15\n')
    (conf / "input.prometheus" / "prometheus.toml").write_text(f'[[instances]]\nurls = ["{url}"]\n')
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RUN_PROBE, "run", "--config-dir", str(conf), "--listen", "127.0.0.1:0",
             "--spool-dir", str(tmp_path / "spool"), "--writer-url", "http://127.0.0.1:9/api/v1/write",
             "--shutdown-timeout", "0.5"],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
            check=False,
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stderr.rsplit("MODULES ", 1)[1].split("\n", 1)[0].split()
    assert "kubescrape.agent" in loaded and "kubescrape.scrape.loop" in loaded
    unwanted = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in NOT_ON_THE_RUN_PATH)]
    assert unwanted == []
    # By the first scrape the collector runs again, with the imports' objects frozen (kubescrape/__main__.py),
    # and the system's mime.types has not been read (kubescrape/_aiohttp.py).
    assert proc.stderr.rsplit("STATE ", 1)[1].split() == ["True", "True", "False"]


# A plainly valid configuration is resolved without pydantic (kubescrape/config/resolve.py); anything else
# goes through the pydantic models. Prints, per directory: pydantic loaded after loading it?, instances.
LOAD_PROBE = """\
import sys
import kubescrape.__main__, kubescrape.run_options, kubescrape.agent  # the run path
from pathlib import Path
from kubescrape.config.categraf import load_categraf
from kubescrape.errors import ConfigError

for name in sys.argv[1:]:
    try:
        config = load_categraf(Path(name), env={"HOSTNAME": "node-1"})
        print("pydantic" in sys.modules, len(config.instances))
    except ConfigError as exc:
        print("pydantic" in sys.modules, "ConfigError", exc)
"""


def _load_probe(*dirs: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", LOAD_PROBE, *map(str, dirs)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_typical_categraf_configs_load_without_pydantic(tmp_path: Path) -> None:
    from kubescrape.emulator import write_config
    from kubescrape.emulator.fleet import Emulator

    # What `kubescrape emulate --write-config` writes (the emulator needs not run to write it).
    emulated = tmp_path / "emulated"
    write_config(Emulator(tmp_path / "state", port=10250, healthz_port=None, proxy_port=10249), emulated,
                 "http://127.0.0.1:9090/api/v1/write")
    seed = ROOT / "tests" / "data" / "categraf_seed"
    shipped = PACKAGE / "data" / "categraf"
    assert _load_probe(emulated, seed, shipped) == ["False 3", "False 3", "False 3"]


def test_an_invalid_value_is_decided_by_the_pydantic_models(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    (conf / "config.toml").write_text('[global]\nhostname = "n"\n')
    (conf / "input.prometheus" / "prometheus.toml").write_text('[[instances]]\nurls = ["ftp://h/m"]\n')
    (line,) = _load_probe(conf)
    assert line.startswith("True ConfigError ")
    assert "invalid value for instances[0].urls: 'ftp://h/m' is not an http" in line


# ---- aiohttp's default SSL contexts (kubescrape/_aiohttp.py) ---------------------------------------------

TLS_PROBE = """\
import asyncio, sys
if sys.argv[1] == "plain":
    import aiohttp
import kubescrape.agent  # the run path
from kubescrape._aiohttp import aiohttp, web
from kubescrape.client import ScrapeClient, make_session
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.emulator.pki import CertPair, server_ssl_context
from kubescrape.scrape.targets import build_targets

async def main():
    app = web.Application()
    app.router.add_get("/metrics", lambda r: web.Response(text="up_probe 1\\n"))
    runner = web.AppRunner(app)
    await runner.setup()
    pair = CertPair(open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(pair))
    await site.start()
    url = f"https://localhost:{site._server.sockets[0].getsockname()[1]}/metrics"
    try:
        async with make_session(limit=1) as session, session.get(url) as resp:  # aiohttp's default context
            print("default:", resp.status)
    except aiohttp.ClientConnectorCertificateError as e:
        print("default: certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else e)
    client = ScrapeClient()
    target = build_targets(AgentConfig(global_=GlobalConfig(hostname="n"),
                                       instances=[InstanceConfig(urls=[url])]))[0]
    result = await client.fetch(target)  # no use_tls: the system trust store, loaded by kubescrape
    print("scrape client:", result.body.decode().strip())
    await client.close()
    await runner.cleanup()

asyncio.run(main())
"""


def _tls_probe(mode: str, tmp_path: Path) -> list[str]:
    from kubescrape.emulator.pki import CertificateAuthority

    ca = CertificateAuthority.create()
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    ca.issue_server("probe", ips=("127.0.0.1",), dns_names=("localhost",)).write(
        tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "certs").mkdir()
    # The "system" trust store is the test CA alone: OpenSSL reads SSL_CERT_FILE/SSL_CERT_DIR.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SSL_CERT_FILE": str(ca_file),
           "SSL_CERT_DIR": str(tmp_path / "certs")}
    proc = subprocess.run([sys.executable, "-c", TLS_PROBE, mode, str(tmp_path / "tls.crt"),
                           str(tmp_path / "tls.key")], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_aiohttp_default_context_fails_closed_and_the_scrape_client_still_verifies(tmp_path: Path) -> None:
    # Imported through kubescrape, aiohttp's verified default holds no CA: a request that relies on it is
    # refused even by a server the system store trusts; kubescrape's own system context still verifies.
    assert _tls_probe("kubescrape", tmp_path) == ["default: certificate verify failed",
                                                  "scrape client: up_probe 1"]


def test_the_tls_probe_server_is_trusted_by_the_system_store(tmp_path: Path) -> None:
    # The control: with aiohttp imported first (its defaults loaded normally) the same request succeeds,
    # so the refusal above is the missing trust store, not the server.
    assert _tls_probe("plain", tmp_path) == ["default: 200", "scrape client: up_probe 1"]


# ---- mimetypes (kubescrape/_aiohttp.py) ------------------------------------------------------------------

MIME_PROBE = """\
import mimetypes, sys
if sys.argv[1] == "plain":
    import aiohttp.web
else:
    import kubescrape._aiohttp
from aiohttp import web_fileresponse
table = web_fileresponse.CONTENT_TYPES.types_map[True]
print(mimetypes.inited, len(table), repr(sorted(table.items())) == sys.argv[2],
      mimetypes.guess_type("a.json")[0], mimetypes.guess_type("a.tar.gz"), mimetypes.inited)
"""


def _mime_probe(mode: str) -> str:
    # aiohttp's table: Python's built-in types plus aiohttp's additions, whether or not the system's file
    # was read (a MimeTypes() never includes it).
    from aiohttp import web_fileresponse

    table = repr(sorted(web_fileresponse.CONTENT_TYPES.types_map[True].items()))
    proc = subprocess.run([sys.executable, "-c", MIME_PROBE, mode, table],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_aiohttp_imported_through_kubescrape_leaves_mimetypes_to_initialise_on_first_use() -> None:
    # aiohttp's own table is the same either way; the module's table is read from the system on the first
    # guess instead of at import.
    through_kubescrape = _mime_probe("kubescrape")
    assert through_kubescrape.split()[0] == "False" and through_kubescrape.split()[2] == "True"
    assert through_kubescrape.endswith(" True")
    plain = _mime_probe("plain")
    assert plain.split()[0] == "True" and plain.split()[2] == "True"
    assert through_kubescrape.split(" ", 1)[1] == plain.split(" ", 1)[1]
