"""Status pages and the targets API on the agent's ``--listen`` address, next to ``/metrics``.

* ``/targets``: targets grouped by job with up/total; per target the URL, final labels, health, last
  scrape, duration, samples, series, and the last error *with its fix*. Filters (unhealthy only, text)
  work without JavaScript (``?state=unhealthy&q=…``: rows that do not match are rendered ``hidden``); a
  few lines of script apply the same filters as you type.
* ``/service-discovery``: discovered versus final labels, and dropped targets with the rule that dropped
  them, bounded like Prometheus' ``keep_dropped_targets``.
* ``/targets/<id>/relabel``: discovered labels → each ``target_relabel_configs`` rule → final labels.
* ``/writers``: per remote-write destination: state, shards, bytes, oldest unsent age, the sample counts
  and the ledger identity ``appended = sent + dropped + evicted + pending``, read from the self-metrics.
* ``/api/v1/targets``: Prometheus' JSON shape (``state=``, ``scrapePool=``), plus vmagent's
  ``lastSamplesScraped``, so tools written for Prometheus' API work against kubescrape.
* ``/config``: the effective configuration, every secret shown as ``<secret>``.

Everything is read-only and server-rendered. The pages read the agent through :class:`StatusSource`, a
narrow protocol, and read delivery numbers through the prometheus_client registry, so they survive changes
inside the agent. As a last line of defence every response is scrubbed of the configured secret values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from string import Template
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from prometheus_client import CollectorRegistry

from kubescrape import __version__
from kubescrape._aiohttp import web
from kubescrape.config.models import AgentConfig
from kubescrape.errors import KubescrapeError
from kubescrape.redact import SECRET, SECRET_HEADERS, redact_url
from kubescrape.relabel import RelabelConfig, RelabelStep, relabel_steps
from kubescrape.scrape.targets import DiscoveredTarget, Target, discover

__all__ = [
    "StatusPages",
    "StatusSource",
    "TargetLoop",
    "add_routes",
    "format_duration",
    "rfc3339",
]

KEEP_DROPPED_TARGETS = 100
"""Dropped targets listed at most (Prometheus' ``keep_dropped_targets``): a relabel rule that drops most of
a large fleet must not turn every page view into megabytes."""

# Keys of the configuration whose values are credentials (paths to credential files are not secret), and
# words that make a header's value one: the values are scrubbed from every response, whatever shows them.
_SECRET_KEYS = frozenset({"password", "basic_auth_pass", "bearer_token_string", "tls_key_pwd", "token",
                          "credentials", "secret", "api_key"})
_SECRET_HEADER_WORDS = ("auth", "token", "cookie", "secret", "key", "password", "session")
_NEVER = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what Prometheus shows for "never scraped"


# --- what the pages read ----------------------------------------------------------------------------


class TargetLoop(Protocol):
    """One scrape loop: its target and its running stats (``ScrapeLoop``). Stats fields are read with
    defaults, so a stats object with fewer fields still renders."""

    @property
    def target(self) -> Target: ...

    @property
    def stats(self) -> object: ...


class HasRegistry(Protocol):
    """The self-metrics: only the registry is read."""

    @property
    def registry(self) -> CollectorRegistry: ...


class StatusSource(Protocol):
    """What the status pages need of a running agent (:class:`kubescrape.agent.Agent` is one)."""

    @property
    def config(self) -> AgentConfig: ...

    @property
    def loops(self) -> Sequence[TargetLoop]: ...

    @property
    def metrics(self) -> HasRegistry: ...

    def stats(self) -> object:
        """A snapshot whose ``writers`` attribute lists per-writer stats (``WriterStats``)."""
        ...


# --- formatting helpers -----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """Prometheus' ``model.Duration`` text: ``15s``, ``1m30s``, ``500ms``, ``0s``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def rfc3339(timestamp: float | None) -> str:
    """A Unix time as Go's RFC3339Nano in UTC (trailing zeros trimmed); Go's zero time for None."""
    if timestamp is None:
        return _NEVER
    text = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text.rstrip("0").rstrip(".") + "Z"


def _ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    age = max(0.0, now - timestamp)
    if age < 60:
        return f"{age:.1f}s ago"
    return f"{format_duration(age)} ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def _bytes(value: float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- secrets ----------------------------------------------------------------------------------------


def _secret_header(name: str) -> bool:
    lower = name.lower()
    return lower in SECRET_HEADERS or any(word in lower for word in _SECRET_HEADER_WORDS)


def _secrets_of(value: Any, key: str = "") -> set[str]:
    """Every credential value in a configuration dump (for the final scrub of responses)."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        for k, v in value.items():
            if key == "headers" and _secret_header(str(k)) and isinstance(v, str):
                found.add(v)
                found.update(v.split()[1:])  # "Bearer <token>": the token alone is secret too
            found |= _secrets_of(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            found |= _secrets_of(v, key)
    elif isinstance(value, str):
        if key.lower() in _SECRET_KEYS:
            found.add(value)
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.update({password, unquote(password)})
    found |= {quote(s, safe="") for s in found}
    # Very short values would blank out ordinary words; a 1–3 character secret is not worth keeping.
    return {s for s in found if len(s) >= 4}


# --- the model behind the pages ---------------------------------------------------------------------


@dataclass
class TargetInfo:
    """One target as the pages show it: configuration, relabeling trace and live state."""

    id: str
    pool: str
    discovered: dict[str, str]
    rules: tuple[RelabelConfig, ...]
    steps: list[RelabelStep]
    target: Target | None
    stats: object = None
    reason: str = ""
    """Why a target without ``target`` is not scraped."""

    @property
    def dropped(self) -> bool:
        return self.target is None

    @property
    def health(self) -> str:
        up = getattr(self.stats, "up", None)
        return "unknown" if up is None else "up" if up else "down"

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.target.labels) if self.target is not None else {}

    @property
    def url(self) -> str:
        return redact_url(self.target.url) if self.target is not None else ""

    @property
    def last_scrape(self) -> float | None:
        value = getattr(self.stats, "last_scrape", None)
        return float(value) if isinstance(value, int | float) else None

    def number(self, name: str, default: float = 0) -> float:
        value = getattr(self.stats, name, default)
        return float(value) if isinstance(value, int | float) else default

    @property
    def samples_scraped(self) -> int:
        return int(self.number("samples_scraped", self.number("samples")))

    @property
    def series(self) -> int:
        """Series in the last scrape after relabeling (one sample each)."""
        return int(self.number("samples"))

    @property
    def error(self) -> tuple[str, str | None] | None:
        return error_parts(self.stats)

    def search_text(self) -> str:
        error = self.error
        parts = [self.pool, self.url, self.health, *(f"{k}={v}" for k, v in self.labels.items())]
        if error is not None:
            parts += [error[0], error[1] or ""]
        return " ".join(parts).lower()


def error_parts(stats: object) -> tuple[str, str | None] | None:
    """(cause, fix) of the last error in a stats object: from its ``error`` (a KubescrapeError) when it
    keeps one, otherwise split from the ``last_error`` text (``"<cause>; fix: <fix>"``)."""
    err = getattr(stats, "error", None)
    if isinstance(err, KubescrapeError):
        return err.cause, err.fix
    text = getattr(stats, "last_error", None)
    if not text:
        return None
    cause, _, fix = str(text).partition("; fix: ")
    return cause, fix or None


def _target_id(instance: int, labels: Mapping[str, str], taken: set[str]) -> str:
    key = f"{instance}\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    ident = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    n = 1
    while ident in taken:
        n += 1
        ident = hashlib.blake2b(f"{key}\x00{n}".encode(), digest_size=6).hexdigest()
    taken.add(ident)
    return ident


def _pool_of(labels: Mapping[str, str], instance: int) -> str:
    return labels.get("job") or f"instances[{instance}]"


def _silence(_: logging.LogRecord) -> bool:
    return False


def _drop_reason(steps: list[RelabelStep]) -> str:
    if steps and steps[-1].dropped:
        last = steps[-1]
        return f"dropped by target_relabel_configs rule #{last.index + 1} (action: {last.rule.action})"
    return "no __address__ left after target_relabel_configs"


# --- the pages --------------------------------------------------------------------------------------


_CSS = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#6e7781;--line:#d0d7de}
body{font:14px/1.45 system-ui,sans-serif;margin:0;padding:0 1.2rem 2rem}
header{border-bottom:1px solid var(--line);padding:.6rem 0;margin-bottom:1rem}
nav a{margin-right:1rem;text-decoration:none;font-weight:600}
h1{font-size:1.4rem;margin:.4rem 0 1rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;width:100%;margin-bottom:1rem} table.targets{table-layout:fixed}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
th{font-size:.85rem;color:var(--mute)}
code,pre,.url{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}
pre{padding:.6rem;border:1px solid var(--line);overflow-x:auto;white-space:pre-wrap}
.label{display:inline-block;border:1px solid var(--line);border-radius:4px;padding:0 .3rem;margin:.1rem;
 font-family:ui-monospace,monospace;font-size:.8rem}
.label.changed{border-color:var(--warn)} .label.added{border-color:var(--ok)}
.label.removed{border-color:var(--bad);text-decoration:line-through}
.state{font-weight:700;text-transform:uppercase;font-size:.8rem}
.up{color:var(--ok)} .down,.dropped,.failing{color:var(--bad)} .unknown,.idle{color:var(--mute)}
.error{color:var(--bad)} .fix{color:inherit} .fix b{color:var(--ok)}
.muted{color:var(--mute)} .count{font-weight:400;color:var(--mute)}
form.filters{margin:0 0 1rem} form.filters input[type=search]{min-width:20rem}
[hidden]{display:none!important}
"""

_FILTER_JS = """
(function () {
  var form = document.getElementById("filters");
  if (!form) { return; }
  var only = form.elements["state"], text = form.elements["q"];
  function apply() {
    var q = text.value.toLowerCase().trim(), shownPools = 0;
    document.querySelectorAll("section.pool").forEach(function (pool) {
      var shown = 0;
      pool.querySelectorAll("tr.target").forEach(function (row) {
        var ok = (!only.checked || row.dataset.health !== "up") &&
                 (!q || row.dataset.search.indexOf(q) >= 0);
        row.hidden = !ok;
        if (ok) { shown++; }
      });
      pool.hidden = shown === 0;
      if (shown) { shownPools++; }
    });
    document.getElementById("none").hidden = shownPools !== 0;
    var params = new URLSearchParams();
    if (only.checked) { params.set("state", "unhealthy"); }
    if (q) { params.set("q", q); }
    var search = params.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
  }
  only.addEventListener("change", apply);
  text.addEventListener("input", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
  document.getElementById("apply").hidden = true;
})();
"""

_LAYOUT = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · kubescrape</title>
<style>$css</style>
</head>
<body>
<header><nav>
<a href="/">kubescrape</a>
<a href="/targets">Targets</a>
<a href="/service-discovery">Service discovery</a>
<a href="/writers">Writers</a>
<a href="/config">Configuration</a>
<a href="/metrics">Metrics</a>
<a href="/api/v1/targets">API</a>
</nav></header>
<main>
<h1>$title</h1>
$body
</main>
$script
</body>
</html>
""")

# The same column widths in every job's table, so the tables line up.
_TARGET_COLUMNS = "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in (17, 6, 25, 8, 7, 6, 5, 26)) + \
    "</colgroup>"

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _labels_html(labels: Mapping[str, str], before: Mapping[str, str] | None = None) -> str:
    chips = []
    for k, v in sorted(labels.items()):
        cls = "label"
        if before is not None:
            if k not in before:
                cls += " added"
            elif before[k] != v:
                cls += " changed"
        chips.append(f'<span class="{cls}">{_e(k)}="{_e(v)}"</span>')
    if before is not None:
        chips += [f'<span class="label removed">{_e(k)}="{_e(v)}"</span>'
                  for k, v in sorted(before.items()) if k not in labels]
    return " ".join(chips) or '<span class="muted">(none)</span>'


def _error_html(error: tuple[str, str | None] | None) -> str:
    if error is None:
        return ""
    cause, fix = error
    out = f'<div class="error">{_e(cause)}</div>'
    if fix:
        out += f'<div class="fix"><b>Fix:</b> {_e(fix)}</div>'
    return out


def _rule_text(rule: RelabelConfig) -> str:
    import yaml  # here, not at module level: the agent's start-up does not need PyYAML
    data = {"action": rule.action, **rule.model_dump(exclude_defaults=True, exclude={"action"})}
    # One line per field, lists inline: how relabel rules are written in Prometheus' documentation.
    return "\n".join(yaml.safe_dump({k: v}, default_flow_style=None if isinstance(v, list) else False,
                                    allow_unicode=True, width=1000).strip() for k, v in data.items())


@dataclass
class _Metrics:
    """The self-metrics samples, by name: [(labels, value)]."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def read(cls, registry: CollectorRegistry) -> _Metrics:
        out = cls()
        for family in registry.collect():
            for s in family.samples:
                out.samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        matches = [v for lb, v in self.samples.get(name, ())
                   if all(lb.get(k) == x for k, x in labels.items())]
        return sum(matches) if matches else None

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for lb, v in self.samples.get(name, ()):
            if all(lb.get(k) == x for k, x in labels.items()):
                out[lb.get(label, "")] = out.get(label, 0.0) + v
        return out

    def label_values(self, name: str, label: str) -> list[str]:
        return sorted({lb[label] for lb, _ in self.samples.get(name, ()) if label in lb})


@dataclass
class WriterInfo:
    """One remote-write destination as ``/writers`` shows it."""

    name: str
    url: str
    state: str
    shards: float | None
    queue_bytes: float | None
    spool_bytes: float | None
    oldest_unsent_age: float | None
    appended: float
    sent: float
    retried: float
    failed: float
    dropped: dict[str, float]
    evicted: float
    pending: float | None
    error: tuple[str, str | None] | None

    @property
    def ledger_gap(self) -> float | None:
        """appended − (sent + dropped + evicted + pending); 0 when every sample is accounted for."""
        if self.pending is None:
            return None
        return self.appended - (self.sent + sum(self.dropped.values()) + self.evicted + self.pending)


class StatusPages:
    """The handlers. Discovery (configured URLs → targets, relabeling traces) is computed once: the
    configuration does not change while the agent runs."""

    def __init__(self, source: StatusSource, *, keep_dropped_targets: int = KEEP_DROPPED_TARGETS,
                 now: Callable[[], float] = time.time) -> None:
        self.source = source
        self.keep_dropped_targets = keep_dropped_targets
        self.now = now
        self._discovered: list[TargetInfo] | None = None
        raw = source.config.model_dump(mode="json", by_alias=True)
        self.secrets = sorted(_secrets_of(raw), key=len, reverse=True)
        """The configured credential values, longest first; no response contains one."""

    # ---- data ----

    def _discovery(self) -> list[TargetInfo]:
        if self._discovered is None:
            config = self.source.config
            taken: set[str] = set()
            infos: list[TargetInfo] = []
            # The agent logged what building its targets found (clamped timeouts, dropped targets) once,
            # at start; doing the same work again here must not log it again.
            config_log = logging.getLogger("kubescrape.config")
            config_log.addFilter(_silence)
            try:
                found: list[DiscoveredTarget] = discover(config)
            finally:
                config_log.removeFilter(_silence)
            for d in found:
                rules = tuple(config.instances[d.instance].target_relabel_configs)
                steps = relabel_steps(d.labels, rules)
                info = TargetInfo(id=_target_id(d.instance, d.labels, taken),
                                  pool=_pool_of(d.labels, d.instance), discovered=d.labels, rules=rules,
                                  steps=steps, target=d.target)
                if d.target is None:
                    info.reason = _drop_reason(steps)
                infos.append(info)
            self._discovered = infos
        return self._discovered

    def targets(self) -> list[TargetInfo]:
        """Every discovered target (active ones with their live stats), then loops nothing configured."""
        infos = [replace(i) for i in self._discovery()]
        by_name = {i.target.name: i for i in infos if i.target is not None}
        taken = {i.id for i in infos}
        for loop in self.source.loops:
            info = by_name.get(loop.target.name)
            if info is None:  # a target from elsewhere than [[instances]] (service discovery)
                t = loop.target
                parts = urlsplit(t.url)
                discovered = {**dict(t.labels), "__address__": parts.netloc, "__scheme__": parts.scheme,
                              "__metrics_path__": parts.path}
                info = TargetInfo(id=_target_id(-1, discovered, taken), pool=_pool_of(dict(t.labels), -1),
                                  discovered=discovered, rules=(), steps=[], target=t)
                infos.append(info)
            info.target = loop.target  # the one being scraped
            info.stats = loop.stats
        return infos

    def pools(self, infos: Iterable[TargetInfo]) -> dict[str, list[TargetInfo]]:
        out: dict[str, list[TargetInfo]] = {}
        for i in infos:
            out.setdefault(i.pool, []).append(i)
        return dict(sorted(out.items()))

    def writers(self) -> list[WriterInfo]:
        m = _Metrics.read(self.source.metrics.registry)
        stats = {str(getattr(w, "name", "")): w for w in getattr(self.source.stats(), "writers", None) or []}
        names = list(stats)
        for metric in ("kubescrape_samples_appended_total", "kubescrape_spool_bytes"):
            names += [n for n in m.label_values(metric, "writer") if n not in names]
        out = []
        for name in names:
            w = stats.get(name)
            pending = m.value("kubescrape_samples_pending", writer=name)
            if pending is None and w is not None:
                pending = float(getattr(w, "pending_samples", 0) or 0)
            error = error_parts(w)
            age = m.value("kubescrape_spool_oldest_unsent_age_seconds", writer=name)
            state = getattr(w, "state", None)
            if not isinstance(state, str):
                state = "failing" if error is not None and (pending or 0) > 0 else "ok"
            queue_bytes = getattr(w, "queue_bytes", None)
            out.append(WriterInfo(
                name=name,
                url=redact_url(str(getattr(w, "url", "") or "")),
                state=state,
                shards=m.value("kubescrape_remote_write_shards", writer=name),
                queue_bytes=float(queue_bytes) if isinstance(queue_bytes, int | float) else None,
                spool_bytes=m.value("kubescrape_spool_bytes", writer=name),
                oldest_unsent_age=age,
                appended=m.value("kubescrape_samples_appended_total", writer=name) or 0.0,
                sent=m.value("kubescrape_samples_sent_total", writer=name) or 0.0,
                retried=m.value("kubescrape_samples_retried_total", writer=name) or 0.0,
                failed=m.value("kubescrape_samples_failed_total", writer=name) or 0.0,
                dropped=m.by("kubescrape_samples_dropped_total", "reason", writer=name),
                evicted=m.value("kubescrape_spool_samples_evicted_total", writer=name) or 0.0,
                pending=pending,
                error=error,
            ))
        return out

    # ---- responses ----

    def _scrub(self, text: str, escape: Callable[[str], str]) -> str:
        """Replace every configured secret, raw or in the page's escaping, by the escaped marker."""
        marker = escape(SECRET)
        for secret in self.secrets:
            for form in {secret, escape(secret)}:
                text = text.replace(form, marker)
        return text

    def _page(self, title: str, body: str, *, script: str = "") -> web.Response:
        page = _LAYOUT.substitute(title=_e(title), css=_CSS, body=body,
                                  script=f"<script>{script}</script>" if script else "")
        return web.Response(text=self._scrub(page, _e), content_type="text/html", headers=_SECURITY_HEADERS)

    def _json(self, data: object) -> web.Response:
        return web.Response(text=self._scrub(json.dumps(data), lambda s: json.dumps(s)[1:-1]),
                            content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    # ---- handlers ----

    async def index(self, _: web.Request) -> web.Response:
        infos = [i for i in self.targets() if not i.dropped]
        up = sum(1 for i in infos if i.health == "up")
        writers = self.writers()
        rows = [
            ("/targets", "Targets", f"{up}/{len(infos)} up: health, last scrape, errors and their fixes"),
            ("/service-discovery", "Service discovery",
             "discovered and final labels; dropped targets and the rule that dropped them"),
            ("/writers", "Writers", f"{len(writers)} remote-write destination(s): queue, spool, ledger"),
            ("/config", "Configuration", "the effective configuration, secrets hidden"),
            ("/api/v1/targets", "Targets API", "Prometheus' /api/v1/targets JSON"),
            ("/metrics", "Self-metrics", "the agent's own metrics, Prometheus text format"),
            ("/healthz", "Health", "liveness"),
        ]
        body = "<table><tbody>" + "".join(
            f'<tr><td><a href="{href}">{_e(name)}</a></td><td>{_e(text)}</td></tr>'
            for href, name, text in rows
        ) + f'</tbody></table><p class="muted">kubescrape {_e(__version__)}</p>'
        return self._page("Status", body)

    async def targets_page(self, request: web.Request) -> web.Response:
        only_unhealthy = request.query.get("state", "") == "unhealthy"
        query = request.query.get("q", "").strip().lower()
        now = self.now()
        sections = []
        visible_pools = 0
        for pool, infos in self.pools(i for i in self.targets() if not i.dropped).items():
            up = sum(1 for i in infos if i.health == "up")
            rows = []
            shown = 0
            for i in infos:
                match = (not only_unhealthy or i.health != "up") and (not query or query in i.search_text())
                shown += match
                rows.append(
                    f'<tr class="target" id="t-{i.id}" data-health="{i.health}" '
                    f'data-search="{_e(i.search_text())}"{"" if match else " hidden"}>'
                    f'<td><span class="url">{_e(i.url)}</span><br>'
                    f'<a href="/targets/{i.id}/relabel">relabeling</a></td>'
                    f'<td><span class="state {i.health}">{i.health}</span></td>'
                    f"<td>{_labels_html(i.labels)}</td>"
                    f'<td title="{rfc3339(i.last_scrape)}">{_ago(i.last_scrape, now)}</td>'
                    f"<td>{_seconds(i.number('duration') if i.last_scrape is not None else None)}</td>"
                    f"<td>{_num(i.samples_scraped)}</td><td>{_num(i.series)}</td>"
                    f"<td>{_error_html(i.error)}</td></tr>"
                )
            visible_pools += shown > 0
            sections.append(
                f'<section class="pool" id="pool-{_e(pool)}"{"" if shown else " hidden"}>'
                f'<h2>{_e(pool)} <span class="count">({up}/{len(infos)} up)</span></h2>'
                f'<table class="targets">{_TARGET_COLUMNS}<thead><tr><th>Endpoint</th><th>State</th>'
                "<th>Labels</th><th>Last scrape</th>"
                "<th>Duration</th><th>Samples</th><th>Series</th><th>Error</th></tr></thead><tbody>"
                + "".join(rows) + "</tbody></table></section>"
            )
        form = (
            '<form class="filters" id="filters" method="get" action="/targets">'
            '<label><input type="checkbox" name="state" value="unhealthy"'
            f'{" checked" if only_unhealthy else ""}> Unhealthy only</label> '
            f'<input type="search" name="q" value="{_e(query)}" placeholder="Filter by URL, label or error" '
            'aria-label="Filter"> <button type="submit" id="apply">Apply</button></form>'
        )
        none = f'<p id="none" class="muted"{" hidden" if visible_pools else ""}>No targets match.</p>'
        return self._page("Targets", form + none + "".join(sections), script=_FILTER_JS)

    async def service_discovery_page(self, _: web.Request) -> web.Response:
        infos = self.targets()
        dropped_total = sum(1 for i in infos if i.dropped)
        sections = []
        listed_dropped = 0
        for pool, members in self.pools(infos).items():
            active = sum(1 for i in members if not i.dropped)
            rows = []
            for i in members:
                if i.dropped:
                    listed_dropped += 1
                    if listed_dropped > self.keep_dropped_targets:
                        continue
                    final = (f'<span class="state dropped">dropped</span> {_e(i.reason)}'
                             f'<br><a href="/targets/{i.id}/relabel">relabeling steps</a>')
                else:
                    final = (f"{_labels_html(i.labels)}"
                             f'<br><a href="/targets/{i.id}/relabel">relabeling steps</a>')
                rows.append(f'<tr id="sd-{i.id}"><td>{_labels_html(i.discovered)}</td><td>{final}</td></tr>')
            sections.append(
                f'<section class="pool"><h2>{_e(pool)} <span class="count">({active} active / '
                f"{len(members)} discovered)</span></h2><table><thead><tr><th>Discovered labels</th>"
                "<th>Target labels</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>"
            )
        note = ""
        if dropped_total > self.keep_dropped_targets:
            note = (f'<p class="muted">{dropped_total - self.keep_dropped_targets} more dropped target(s) '
                    f"not listed (keep_dropped_targets = {self.keep_dropped_targets}).</p>")
        return self._page("Service discovery", "".join(sections) + note)

    async def relabel_page(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        info = next((i for i in self.targets() if i.id == ident), None)
        if info is None:
            raise web.HTTPNotFound(text=f"no target with id {ident}: see /service-discovery\n")
        body = [f'<p>Scrape pool <b>{_e(info.pool)}</b>. '
                '<a href="/service-discovery">All discovered targets</a></p>',
                f"<h2>Discovered labels</h2><p>{_labels_html(info.discovered)}</p>"]
        if not info.rules:
            body.append('<p class="muted">This target has no target_relabel_configs: the final labels are '
                        "the discovered ones without the labels that start with __.</p>")
        before = {k: v for k, v in info.discovered.items() if v != ""}
        for step in info.steps:
            result = ('<span class="state dropped">dropped here</span>' if step.labels is None
                      else _labels_html(step.labels, before))
            body.append(
                f'<section class="step" id="step-{step.index + 1}"><h2>Rule #{step.index + 1}: '
                f"{_e(step.rule.action)}</h2><pre>{_e(_rule_text(step.rule))}</pre><p>{result}</p></section>"
            )
            if step.labels is not None:
                before = step.labels
        if info.dropped:
            body.append(f'<h2>Result</h2><p class="error" id="result">Dropped: {_e(info.reason)}.</p>')
        else:
            body.append(f'<h2>Final labels</h2><p id="result">{_labels_html(info.labels)}</p>'
                        f'<p>Scrape URL: <span class="url">{_e(info.url)}</span></p>')
        d = info.discovered
        name = info.url or d.get("instance") or d.get("__address__", "") + d.get("__metrics_path__", "")
        return self._page(f"Relabeling of {name}", "".join(body))

    async def writers_page(self, _: web.Request) -> web.Response:
        writers = self.writers()
        if not writers:
            return self._page("Writers", '<p class="muted">No remote-write destination (the agent runs with '
                                         "its own sink, or in --test mode).</p>")
        sections = []
        for w in writers:
            dropped = sum(w.dropped.values())
            reasons = ", ".join(f"{_e(r)}: {_num(v)}" for r, v in sorted(w.dropped.items()) if v) or "none"
            gap = w.ledger_gap
            if gap is None:
                ledger = '<span class="muted">pending unknown: the identity cannot be checked</span>'
            elif abs(gap) < 0.5:
                ledger = '<span class="up">balanced</span>'
            else:
                ledger = f'<span class="down">off by {_num(gap)} sample(s)</span>'
            rows = [
                ("State", f'<span class="state {_e(w.state)}">{_e(w.state)}</span>'),
                ("URL", f'<span class="url">{_e(w.url)}</span>'),
                ("Shards", _num(w.shards)),
                ("Queue bytes", _bytes(w.queue_bytes)),
                ("Spool bytes", _bytes(w.spool_bytes)),
                ("Oldest unsent", _seconds(w.oldest_unsent_age) if w.pending != 0 else "nothing unsent"),
                ("Samples sent", _num(w.sent)),
                ("Samples retried", _num(w.retried)),
                ("Samples in failed attempts", _num(w.failed)),
                ("Samples dropped", f"{_num(dropped)} ({reasons})"),
                ("Samples evicted", _num(w.evicted)),
                ("Samples pending", _num(w.pending)),
                ("Ledger", f"appended {_num(w.appended)} = sent {_num(w.sent)} + dropped {_num(dropped)} + "
                           f"evicted {_num(w.evicted)} + pending {_num(w.pending)}: {ledger}"),
                ("Last error", _error_html(w.error) or '<span class="muted">none</span>'),
            ]
            table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
            sections.append(f'<section class="writer"><h2>{_e(w.name)}</h2><table><tbody>{table}'
                            "</tbody></table></section>")
        return self._page("Writers", "".join(sections))

    async def config_page(self, _: web.Request) -> web.Response:
        config = self.source.config
        data = {("global" if k == "global_" else k): v  # the TOML table's name
                for k, v in config.redacted().items() if k not in ("warnings", "files")}
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        body = ""
        if config.files:
            body += "<p>Read from: " + ", ".join(f"<code>{_e(f)}</code>" for f in config.files) + "</p>"
        if config.warnings:
            body += "<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in config.warnings) + "</ul>"
        body += f"<h2>Effective configuration</h2><pre id=\"config\">{_e(text)}</pre>"
        return self._page("Configuration", body)

    async def api_targets(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "").lower()
        pool_filter = request.query.get("scrapePool", "")
        show_active = state in ("", "any", "active")
        show_dropped = state in ("", "any", "dropped")
        hostname = self.source.config.global_.hostname or socket.gethostname()
        active: list[dict[str, object]] = []
        dropped: list[dict[str, object]] = []
        for pool, infos in self.pools(self.targets()).items():
            if pool_filter and pool != pool_filter:
                continue
            for i in infos:
                if i.dropped:
                    if show_dropped and len(dropped) < self.keep_dropped_targets:
                        dropped.append({"discoveredLabels": i.discovered})
                    continue
                if not show_active or i.target is None:
                    continue
                error = getattr(i.stats, "last_error", None)
                active.append({
                    "discoveredLabels": i.discovered,
                    "labels": i.labels,
                    "scrapePool": pool,
                    "scrapeUrl": i.url,
                    "globalUrl": _global_url(i.url, hostname),
                    "lastError": str(error) if error else "",
                    "lastScrape": rfc3339(i.last_scrape),
                    "lastScrapeDuration": i.number("duration") if i.last_scrape is not None else 0.0,
                    "health": i.health,
                    "scrapeInterval": format_duration(i.target.interval),
                    "scrapeTimeout": format_duration(i.target.timeout),
                    "lastSamplesScraped": i.samples_scraped,
                })
        return self._json({"status": "success", "data": {"activeTargets": active, "droppedTargets": dropped}})


def _global_url(url: str, hostname: str) -> str:
    """As Prometheus' ``globalURL``: a loopback host is replaced by this machine's name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in ("localhost", "::1") and not host.startswith("127."):
        return url
    netloc = parts.netloc.replace(f"[{host}]" if ":" in host else host, hostname, 1)
    return parts._replace(netloc=netloc).geturl()


def _scrub_middleware(secrets: Sequence[str]) -> Callable[..., Any]:
    """Every other response of the listener (``/metrics`` too: its labels carry URLs) leaves without the
    configured secrets."""
    forms = [(s.encode(), SECRET.encode()) for s in secrets]

    @web.middleware
    async def scrub(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        resp: web.StreamResponse = await handler(request)
        if forms and isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            body = resp.body
            for secret, marker in forms:
                body = body.replace(secret, marker)
            resp.body = body
        return resp

    return scrub


def add_routes(app: web.Application, source: StatusSource, *,
               keep_dropped_targets: int = KEEP_DROPPED_TARGETS) -> web.Application:
    """Add the status pages and ``/api/v1/targets`` (GET only) to ``app``, and scrub the configured
    secrets from every response of ``app``; returns ``app``."""
    pages = StatusPages(source, keep_dropped_targets=keep_dropped_targets)
    app.middlewares.append(_scrub_middleware(pages.secrets))
    app.router.add_get("/", pages.index)
    app.router.add_get("/targets", pages.targets_page)
    app.router.add_get("/targets/{id}/relabel", pages.relabel_page)
    app.router.add_get("/service-discovery", pages.service_discovery_page)
    app.router.add_get("/writers", pages.writers_page)
    app.router.add_get("/config", pages.config_page)
    app.router.add_get("/api/v1/targets", pages.api_targets)
    return app
