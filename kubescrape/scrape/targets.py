"""Targets: the configuration resolved once into plain immutable objects, and per-series labeling.

Label rules (Categraf's ``config/inline.go`` and ``inputs/prometheus``, then Prometheus' scrape rules):

* Target labels, strongest first: the instance ``labels`` (a value ``"-"`` removes that label, also from
  scraped series), the URL label (``url_label_key``, default ``instance``; value ``url_label_value``, a Go
  template over ``.Scheme .Host .Hostname .Port .Path .Query .Fragment``; empty = the whole URL, as Categraf),
  the ``job`` extra, then ``[global] labels`` and ``agent_hostname`` (unless ``omit_hostname``) where not
  already set. There is no default ``job``: Categraf adds none, so a series has one only if configured.
* A scraped label that collides with a target label: ``honor_labels = false`` (default) keeps the target
  value and renames the scraped one ``exported_<name>``; ``honor_labels = true`` keeps the scraped value.
* Per series, in order: ``ignore_metrics`` (globs on the metric or its histogram/summary family name),
  ``ignore_label_keys`` (globs), ``name_prefix``, ``metrics_drop``/``metrics_pass``, ``metrics_name_prefix``,
  the merge above, then ``metric_relabel_configs`` followed by Categraf's ``relabel_configs``.

Credentials in a URL (``http://alice:PASS@host/metrics``) are used and never shown: :attr:`Target.url` is the
URL without userinfo (it is what the ``instance`` label, ``__address__``, the self-metrics' ``target`` label
and every log line see), and the credentials move to :attr:`Target.username`/:attr:`Target.password` unless
the instance sets ``username`` itself, which wins as in Categraf.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from kubescrape.config.models import (
    AgentConfig,
    InstanceConfig,
    format_prometheus_duration,
    parse_prometheus_duration,
)
from kubescrape.errors import ConfigError
from kubescrape.redact import split_userinfo
from kubescrape.relabel import RelabelConfig, relabel

__all__ = [
    "Labeler",
    "TLSSettings",
    "Target",
    "build_targets",
    "compile_globs",
    "make_labeler",
    "populate_labels",
    "render_url_template",
    "synthetic_labels",
    "target_url",
]

logger = logging.getLogger("kubescrape.config")

Labeler = Callable[[str, list[tuple[str, str]]], list[tuple[str, str]] | None]
"""(metric name, scraped labels) → final sorted labels including ``__name__``, or None to drop the series."""

AGENT_HOSTNAME = "agent_hostname"


@dataclass(frozen=True)
class TLSSettings:
    """TLS options of a target. As in Categraf, the ``tls_*`` options apply only when ``use_tls`` is true;
    an https URL without it is verified against the system CAs."""

    use_tls: bool
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    server_name: str | None
    insecure_skip_verify: bool
    min_version: str | None = None
    key_password: str | None = None
    max_version: str | None = None


@dataclass(frozen=True)
class Target:
    """One URL to scrape, with everything the scrape loop needs; built by :func:`build_targets`."""

    url: str
    name: str
    labels: tuple[tuple[str, str], ...]
    interval: float
    timeout: float
    honor_labels: bool
    honor_timestamps: bool
    body_size_limit: int
    tls: TLSSettings
    bearer_token_file: str | None
    bearer_token_string: str | None
    username: str | None
    password: str | None
    headers: tuple[tuple[str, str], ...]
    metric_relabel_configs: tuple[RelabelConfig, ...]
    ignore_metrics: tuple[str, ...]
    ignore_label_keys: tuple[str, ...]
    name_prefix: str = ""
    metrics_drop: tuple[str, ...] = ()
    metrics_pass: tuple[str, ...] = ()
    metrics_name_prefix: str = ""
    enable_compression: bool = True
    # Prometheus' scrape limits (0 = no limit); exceeding one fails the scrape (up = 0).
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    target_limit: int = 0
    track_timestamps_staleness: bool = False
    external_labels: tuple[tuple[str, str], ...] = ()
    """Prometheus' ``external_labels`` (scrape_config targets only): added to every series, the synthetic
    ones too, after metric relabeling and only where the series lacks the label, as remote write does."""
    write_relabel_configs: tuple[RelabelConfig, ...] = ()
    """remote_write's ``write_relabel_configs`` (scrape_config targets only): applied last, after the
    external labels."""
    forced_error: str | None = None
    """Set when the target must not be scraped: every scrape fails with this message (Prometheus'
    ``target_limit exceeded …``), ``up`` 0."""

    @property
    def label_dict(self) -> dict[str, str]:
        """The target labels as a dict."""
        return dict(self.labels)


# --- globs ------------------------------------------------------------------------------------------


def _glob_to_regex(pattern: str) -> str:
    """Translate a gobwas/glob pattern (Categraf's filter): ``*``, ``?``, ``[a-z]``, ``[!a]``, ``{a,b}``."""
    out: list[str] = []
    i = 0
    depth = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One full-match regex for a list of Categraf globs; None when the list is empty."""
    parts = [_glob_to_regex(p) for p in patterns]
    if not parts:
        return None
    return re.compile("(?:" + "|".join(parts) + ")", re.DOTALL)


# --- URL label templates ----------------------------------------------------------------------------

_TEMPLATE_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_TEMPLATE_FIELDS = ("Scheme", "Host", "Hostname", "Port", "Path", "Query", "Fragment")


def _url_fields(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    try:
        port = str(parts.port) if parts.port is not None else ""
    except ValueError:
        port = ""
    return {
        "Scheme": parts.scheme,
        "Host": parts.netloc.rpartition("@")[2],
        "Hostname": hostname,
        "Port": port,
        "Path": parts.path,
        "Query": parts.query,
        "Fragment": parts.fragment,
    }


def render_url_template(template: str, url: str) -> str:
    """Render Categraf's ``url_label_value`` (a Go text/template over the URL's parts) for ``url``.

    Supports field references such as ``{{.Host}}`` and ``{{ .Port }}`` (with ``{{-``/``-}}`` trimming);
    other template actions raise ValueError.
    """
    fields = _url_fields(url)
    out: list[str] = []
    pos = 0
    for m in _TEMPLATE_ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if out and out[-1] == "\x00trim":
            out.pop()
            text = text.lstrip()
        out.append(text)
        expr = m.group(2)
        if not (expr.startswith(".") and expr[1:] in fields):
            raise ValueError(
                f"unsupported template action {{{{{expr}}}}}: use field references "
                + ", ".join("{{." + f + "}}" for f in _TEMPLATE_FIELDS)
            )
        out.append(fields[expr[1:]])
        if m.group(3):
            out.append("\x00trim")
        pos = m.end()
    tail = template[pos:]
    if out and out[-1] == "\x00trim":
        out.pop()
        tail = tail.lstrip()
    out.append(tail)
    return "".join(out)


# --- building targets -------------------------------------------------------------------------------


def build_targets(config: AgentConfig) -> list[Target]:
    """Resolve every URL of every ``[[instances]]`` into a :class:`Target` (skipping instances without URLs).

    ``interval`` is the base interval (input.prometheus ``interval`` or ``[global] interval``) times
    ``interval_times``. Raises ConfigError for a URL label template that cannot be rendered.
    """
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for index, inst in enumerate(config.instances):
        if inst.job_name is not None:
            job_targets = [t for _, t in _job_targets(config, inst) if t is not None]
            for i, job_target in enumerate(job_targets):
                n = seen.get(job_target.name, 0) + 1
                seen[job_target.name] = n
                if n > 1:
                    job_targets[i] = _replace_name(job_target, f"{job_target.name}#{n}")
            targets.extend(_apply_target_limit(job_targets, inst, f"job {inst.job_name!r}"))
            continue
        if not inst.urls:
            logger.warning("[[instances]] #%d has no urls; skipped (as Categraf does)", index + 1)
            continue
        if not inst.use_tls and (inst.tls_ca or inst.tls_cert or inst.tls_key or inst.insecure_skip_verify):
            logger.warning("[[instances]] #%d sets tls_* options but not use_tls = true; as in Categraf they "
                           "are not applied", index + 1)
        built: list[Target] = []
        for url in inst.urls:
            target = _build_one(config, inst, index, url)
            if target is None:
                continue
            n = seen.get(target.name, 0) + 1
            seen[target.name] = n
            if n > 1:
                target = _replace_name(target, f"{target.name}#{n}")
            built.append(target)
        targets.extend(_apply_target_limit(built, inst, f"[[instances]] #{index + 1}"))
    return targets


def _apply_target_limit(built: list[Target], inst: InstanceConfig, where: str) -> list[Target]:
    if inst.target_limit and len(built) > inst.target_limit:
        # Prometheus keeps the targets and fails each scrape, so the excess shows as up == 0.
        message = f"target_limit exceeded (number of targets: {len(built)}, limit: {inst.target_limit})"
        logger.warning("%s: %s; none of its targets is scraped", where, message)
        return [replace(t, forced_error=message) for t in built]
    return built


# --- Prometheus scrape_config targets (scrape/target.go PopulateLabels, Target.URL) ------------------

DEFAULT_SCRAPE_TIMEOUT = 10.0
"""Prometheus' global scrape_timeout default (s); a job without one uses min(this, its interval)."""


def populate_labels(
    lset: Mapping[str, str],
    *,
    job_name: str,
    scheme: str,
    metrics_path: str,
    params: Mapping[str, Sequence[str]],
    interval: float,
    timeout: float,
    relabel_configs: Sequence[RelabelConfig],
) -> dict[str, str] | None:
    """Prometheus' ``PopulateLabels`` (2.42) for one discovered label set: the scrape labels where unset,
    ``__param_<name>`` from ``params``, ``relabel_configs``, a default port from the scheme, and ``instance``
    defaulting to ``__address__``. Returns the labels (internal ``__`` labels included, ``__meta_*``
    removed), None when relabeling dropped the target; raises ValueError for a target Prometheus refuses
    (no ``__address__``, a bad scheme or ``__scrape_interval__``)."""
    lb = _pre_relabel(lset, job_name=job_name, scheme=scheme, metrics_path=metrics_path, params=params,
                      interval=interval, timeout=timeout)
    result = relabel(lb, relabel_configs)
    if result is None:
        return None
    addr = result.get("__address__", "")
    if not addr:
        raise ValueError("no address")
    if _needs_port(addr):
        target_scheme = result.get("__scheme__", "")
        if target_scheme in ("http", ""):
            addr += ":80"
        elif target_scheme == "https":
            addr += ":443"
        else:
            raise ValueError(f"invalid scheme: {scheme!r}")
        result["__address__"] = addr
    if "/" in addr:
        raise ValueError(f"{addr!r} is not a valid hostname")
    interval_text = result.get("__scrape_interval__", "")
    timeout_text = result.get("__scrape_timeout__", "")
    target_interval = _label_duration(interval_text, interval, "interval")
    target_timeout = _label_duration(timeout_text, timeout, "timeout")
    if target_timeout > target_interval:
        raise ValueError(f"scrape timeout cannot be greater than scrape interval "
                         f"({timeout_text!r} > {interval_text!r})")
    for name in [k for k in result if k.startswith("__meta_")]:
        del result[name]
    if not result.get("instance"):
        result["instance"] = addr
    return result


def _pre_relabel(lset: Mapping[str, str], *, job_name: str, scheme: str, metrics_path: str,
                 params: Mapping[str, Sequence[str]], interval: float, timeout: float) -> dict[str, str]:
    """The labels relabel_configs see (Prometheus' ``discoveredLabels``)."""
    lb = dict(lset)
    for name, value in (("job", job_name), ("__scrape_interval__", format_prometheus_duration(interval)),
                        ("__scrape_timeout__", format_prometheus_duration(timeout)),
                        ("__metrics_path__", metrics_path), ("__scheme__", scheme)):
        if not lb.get(name):
            lb[name] = value
    for key, values in params.items():
        if values:
            lb[f"__param_{key}"] = values[0]
    return {k: v for k, v in lb.items() if v != ""}


def _needs_port(addr: str) -> bool:
    """Go's net.SplitHostPort fails on ``addr`` but succeeds with a port appended."""
    def splits(s: str) -> bool:
        if s.startswith("["):
            end = s.find("]")
            return end != -1 and s[end + 1:end + 2] == ":" and ":" not in s[end + 2:]
        return s.count(":") == 1
    return not splits(addr) and splits(addr + ":1234")


def _label_duration(text: str, configured: float, what: str) -> float:
    if text == format_prometheus_duration(configured):
        return configured
    value = parse_prometheus_duration(text) if text else 0.0
    if value == 0:
        raise ValueError(f"scrape {what} cannot be 0")
    return value


def target_url(labels: Mapping[str, str], params: Mapping[str, Sequence[str]]) -> str:
    """Prometheus' ``Target.URL``: ``__scheme__://__address____metrics_path__?query`` where the query is
    ``params`` with the first value of each overridden by a ``__param_<name>`` label, keys sorted."""
    query: dict[str, list[str]] = {k: list(v) for k, v in params.items()}
    for name, value in labels.items():
        if name.startswith("__param_"):
            key = name[len("__param_"):]
            if query.get(key):
                query[key][0] = value
            else:
                query[key] = [value]
    encoded = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k in sorted(query) for v in query[k])
    return urlunsplit((labels.get("__scheme__", ""), labels.get("__address__", ""),
                       labels.get("__metrics_path__", ""), encoded, ""))


def _job_targets(config: AgentConfig, inst: InstanceConfig) -> list[tuple[dict[str, str], Target | None]]:
    """Every static target of a Prometheus scrape_config: its discovered labels and the target (None when
    relabeling dropped it or Prometheus would refuse it), deduplicated by (labels, URL) as Prometheus."""
    interval = inst.scrape_interval or config.global_.interval
    timeout = inst.scrape_timeout or min(DEFAULT_SCRAPE_TIMEOUT, interval)
    job = inst.job_name or ""
    external = tuple(sorted(config.global_.labels.items()))
    out: list[tuple[dict[str, str], Target | None]] = []
    seen: set[tuple[tuple[tuple[str, str], ...], str]] = set()
    for group in inst.static_configs:
        for address in group.targets:
            lset = {**group.labels, "__address__": address}
            discovered = _pre_relabel(lset, job_name=job, scheme=inst.scheme, metrics_path=inst.metrics_path,
                                      params=inst.params, interval=interval, timeout=timeout)
            try:
                full = populate_labels(lset, job_name=job, scheme=inst.scheme, metrics_path=inst.metrics_path,
                                       params=inst.params, interval=interval, timeout=timeout,
                                       relabel_configs=inst.target_relabel_configs)
            except ValueError as exc:
                logger.warning("job %r: target %s is not scraped: %s", job, address, exc)
                out.append((discovered, None))
                continue
            if full is None:
                logger.info("job %r: target %s dropped by relabel_configs", job, address)
                out.append((discovered, None))
                continue
            url = target_url(full, inst.params)
            labels = tuple(sorted((k, v) for k, v in full.items() if not k.startswith("__")))
            if (labels, url) in seen:
                continue
            seen.add((labels, url))
            t_interval = _label_duration(full.get("__scrape_interval__", ""), interval, "interval")
            t_timeout = _label_duration(full.get("__scrape_timeout__", ""), timeout, "timeout")
            target = _make_target(inst, url, labels, t_interval, t_timeout,
                                  inst.username or None, inst.password or None, ())
            out.append((discovered, replace(target, external_labels=external,
                                            write_relabel_configs=tuple(inst.write_relabel_configs))))
    return out


def _replace_name(target: Target, name: str) -> Target:
    return replace(target, name=name)


def _normalize_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.path == "":
        parts = parts._replace(path="/metrics")  # Categraf's default path
    return urlunsplit(parts)


def _target_labels(config: AgentConfig, inst: InstanceConfig, index: int, url: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    try:
        if inst.url_label_key != "-":
            value = render_url_template(inst.url_label_value, url) if inst.url_label_value else url
            labels[inst.url_label_key] = value
        for key, tmpl in inst.url_label_pair.items():
            if tmpl.strip():
                labels[key] = render_url_template(tmpl, url)
    except ValueError as exc:
        raise ConfigError(
            f"url_label_value/url_label_pair of [[instances]] #{index + 1} cannot be rendered: {exc}",
            "write the label value as text with {{.Host}}-style field references, or leave it empty for "
            "the whole URL",
            key=f"instances[{index}].url_label_value",
        ) from None
    for key, value in inst.labels.items():
        if value == "-":
            labels.pop(key, None)
        else:
            labels[key] = value
    if inst.job and "job" not in labels and inst.labels.get("job") != "-":
        labels["job"] = inst.job
    for key, value in config.global_.labels.items():
        labels.setdefault(key, value)
    if not config.global_.omit_hostname:
        labels.setdefault(AGENT_HOSTNAME, config.global_.hostname)
    return {k: v for k, v in labels.items() if v != ""}


def _apply_target_relabel(
    labels: dict[str, str], url: str, rules: list[RelabelConfig], index: int
) -> tuple[dict[str, str], str] | None:
    parts = urlsplit(url)
    lset = dict(labels)
    lset["__address__"] = parts.netloc
    lset["__scheme__"] = parts.scheme
    lset["__metrics_path__"] = parts.path
    params = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in params:
        lset.setdefault(f"__param_{key}", value)
    result = relabel(lset, rules)
    if result is None:
        logger.info("target %s of [[instances]] #%d dropped by target_relabel_configs", url, index + 1)
        return None
    address = result.get("__address__", "")
    if not address:
        logger.warning("target %s of [[instances]] #%d has no __address__ after target_relabel_configs; "
                       "skipped", url, index + 1)
        return None
    new_params = [(k.removeprefix("__param_"), v) for k, v in result.items() if k.startswith("__param_")]
    query = parts.query
    if dict(new_params) != dict(params):
        query = urlencode(new_params)
    new_url = urlunsplit((result.get("__scheme__", parts.scheme), address,
                          result.get("__metrics_path__", parts.path), query, parts.fragment))
    final = {k: v for k, v in result.items() if not k.startswith("__")}
    return final, new_url


def _build_one(config: AgentConfig, inst: InstanceConfig, index: int, raw_url: str) -> Target | None:
    clean_url, url_user, url_password = split_userinfo(raw_url)
    url = _normalize_url(clean_url)
    username: str | None
    password: str | None
    if inst.username:
        username, password = inst.username, inst.password or None
    else:
        username, password = url_user or None, url_password or None
    labels = _target_labels(config, inst, index, url)
    if inst.target_relabel_configs:
        relabeled = _apply_target_relabel(labels, url, inst.target_relabel_configs, index)
        if relabeled is None:
            return None
        labels, url = relabeled
    interval = config.scrape_interval * max(inst.interval_times, 1)
    timeout = inst.timeout
    if timeout > interval > 0:
        # A scrape may not outlive its interval (Prometheus refuses such a config): clamp, and say so.
        logger.warning("[[instances]] #%d: timeout %.3gs exceeds the scrape interval %.3gs; using %.3gs",
                       index + 1, timeout, interval, interval)
        timeout = interval
    dropped_keys = tuple(k for k, v in inst.labels.items() if v == "-")
    return _make_target(inst, url, tuple(sorted(labels.items())), interval, timeout, username, password,
                        dropped_keys)


def _make_target(inst: InstanceConfig, url: str, labels: tuple[tuple[str, str], ...], interval: float,
                 timeout: float, username: str | None, password: str | None,
                 dropped_keys: tuple[str, ...]) -> Target:
    return Target(
        url=url,
        name=url,
        labels=labels,
        interval=interval,
        timeout=timeout,
        honor_labels=inst.honor_labels,
        honor_timestamps=inst.honor_timestamps,
        enable_compression=inst.enable_compression,
        body_size_limit=inst.body_size_limit,
        tls=TLSSettings(
            use_tls=inst.use_tls,
            ca_file=inst.tls_ca or None,
            cert_file=inst.tls_cert or None,
            key_file=inst.tls_key or None,
            server_name=inst.tls_server_name or None,
            insecure_skip_verify=inst.insecure_skip_verify,
            min_version=inst.tls_min_version,
            key_password=inst.tls_key_pwd or None,
            max_version=inst.tls_max_version,
        ),
        bearer_token_file=inst.bearer_token_file or None,
        bearer_token_string=inst.bearer_token_string or None,
        username=username,
        password=password,
        headers=tuple(inst.headers.items()),
        metric_relabel_configs=(*inst.metric_relabel_configs, *inst.relabel_configs),
        ignore_metrics=tuple(inst.ignore_metrics),
        ignore_label_keys=(*inst.ignore_label_keys, *dropped_keys),
        name_prefix=inst.name_prefix,
        metrics_drop=tuple(inst.metrics_drop),
        metrics_pass=tuple(inst.metrics_pass),
        metrics_name_prefix=inst.metrics_name_prefix,
        sample_limit=inst.sample_limit,
        label_limit=inst.label_limit,
        label_name_length_limit=inst.label_name_length_limit,
        label_value_length_limit=inst.label_value_length_limit,
        target_limit=inst.target_limit,
        track_timestamps_staleness=inst.track_timestamps_staleness,
    )


# --- per-series labels ------------------------------------------------------------------------------

_FAMILY_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")
# The compiled labeler shortcut (``_fastpath.plain_labels``): name, scraped labels, target labels.
_Pairs = list[tuple[str, str]]
_PlainLabels = Callable[[str, _Pairs, tuple[tuple[str, str], ...]], _Pairs | None]


def make_labeler(target: Target) -> Labeler:
    """Return the function that labels each NEW series of ``target`` (the series cache calls it once per
    series, not per sample). See the module docstring for the order of the rules."""
    ignore_metrics = compile_globs(target.ignore_metrics)
    ignore_keys = compile_globs(target.ignore_label_keys)
    drop = compile_globs(target.metrics_drop)
    keep = compile_globs(target.metrics_pass)
    rules = target.metric_relabel_configs
    target_labels = target.labels
    target_names = {k for k, _ in target_labels}
    honor = target.honor_labels
    name_prefix = target.name_prefix
    metrics_name_prefix = target.metrics_name_prefix
    external = target.external_labels
    write_rules = target.write_relabel_configs

    def label(name: str, scraped: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        if ignore_metrics is not None and (
            ignore_metrics.fullmatch(name) or ignore_metrics.fullmatch(_FAMILY_SUFFIX.sub("", name))
        ):
            return None
        name = name_prefix + name
        if drop is not None and drop.fullmatch(name):
            return None
        if keep is not None and not keep.fullmatch(name):
            return None
        name = metrics_name_prefix + name
        if ignore_keys is None:
            lset = {key: value for key, value in scraped if value and key != "__name__"}
        else:
            lset = {
                key: value
                for key, value in scraped
                if value and key != "__name__" and not ignore_keys.fullmatch(key)
            }
        if honor:
            for key, value in target_labels:
                lset.setdefault(key, value)
        elif target_names.isdisjoint(lset):
            # The common case: no scraped label clashes with a target label.
            lset.update(target_labels)
        else:
            conflicts = [(k, lset[k]) for k in target_names if k in lset]
            lset.update(target_labels)
            # Prometheus resolves shorter names first, and prefixes again while the name is taken.
            for key, value in sorted(conflicts, key=lambda kv: len(kv[0])):
                new = "exported_" + key
                while new in lset:
                    new = "exported_" + new
                lset[new] = value
        if rules:
            lset["__name__"] = name
            result = relabel(lset, rules)
            if result is None:
                return None
            # Categraf keeps the old name when relabeling removed __name__.
            name = result.pop("__name__", name)
            lset = result
        lset["__name__"] = name
        for key, value in external:
            lset.setdefault(key, value)
        if write_rules:
            written = relabel(lset, write_rules)
            if written is None:
                return None
            written.setdefault("__name__", name)
            lset = written
        return sorted(lset.items())

    plain = not (
        ignore_metrics or ignore_keys or drop or keep or rules or honor or name_prefix or metrics_name_prefix
    )
    if plain and not external and not write_rules:
        # No filter, prefix or rule (the usual kubelet job): only the target labels join the scraped ones.
        return PlainLabeler(target_labels, label)
    return label


class PlainLabeler:
    """:func:`make_labeler`'s labeler for a target without filters, prefixes or rules (the usual kubelet
    job): the scraped labels with a value, the target labels and ``__name__``, sorted.

    A clash between a scraped and a target label (``exported_`` renaming) is left to the full labeler.
    Because nothing else happens, the series cache may label a new series itself from its raw text
    (``_fastpath.cold_run``, compiled) when it sees ``plain_target_labels``; the differential tests
    prove that gives the same labels as calling this."""

    __slots__ = ("_compiled", "_full", "_names", "plain_target_labels")

    def __init__(self, target_labels: tuple[tuple[str, str], ...], full: Labeler) -> None:
        from kubescrape.scrape.cache import COMPILED

        self.plain_target_labels = target_labels
        self._names = {k for k, _ in target_labels}
        self._full = full
        # The compiled helper joins the labels without a dict; it leaves clashes to Python.
        self._compiled: _PlainLabels | None = None
        if COMPILED:
            from kubescrape.scrape._fastpath import plain_labels

            self._compiled = plain_labels

    def __call__(self, name: str, scraped: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        target_labels = self.plain_target_labels
        if self._compiled is not None:
            done: list[tuple[str, str]] | None = self._compiled(name, scraped, target_labels)
            if done is not None:
                return done
        lset = {key: value for key, value in scraped if value and key != "__name__"}
        if not self._names.isdisjoint(lset):
            return self._full(name, scraped)
        lset.update(target_labels)
        lset["__name__"] = name
        return sorted(lset.items())


def synthetic_labels(target: Target, name: str) -> list[tuple[str, str]]:
    """Labels of the series the agent reports about a target (``up``, ``scrape_duration_seconds`` …):
    the target labels plus ``__name__``, sorted; metric relabeling does not apply, as in Prometheus."""
    labels = dict(target.labels)
    for key, value in target.external_labels:
        labels.setdefault(key, value)
    labels["__name__"] = name
    if target.write_relabel_configs:
        # A synthetic series is relabeled but never dropped: the scrape loop always reports it.
        written = relabel(labels, target.write_relabel_configs)
        if written is not None:
            labels = {"__name__": name, **written}
    return sorted(labels.items())


# --- discovery, for the status pages ----------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveredTarget:
    """A configured URL as target relabeling sees it, and what became of it (see :func:`discover`)."""

    instance: int
    """Position of its ``[[instances]]`` entry."""
    labels: dict[str, str]
    """Discovered labels: the target labels plus ``__address__``, ``__scheme__``, ``__metrics_path__`` and
    ``__param_<name>``, before ``target_relabel_configs``."""
    target: Target | None
    """The target built from it, named as :func:`build_targets` names it (``target_limit`` is not applied
    here); None when target relabeling dropped it."""


def discover(config: AgentConfig) -> list[DiscoveredTarget]:
    """Every URL of every ``[[instances]]`` with its discovered labels and resulting target, in
    :func:`build_targets` order. Why one was dropped: ``relabel_steps(d.labels, rules)``."""
    out: list[DiscoveredTarget] = []
    seen: dict[str, int] = {}
    for index, inst in enumerate(config.instances):
        if inst.job_name is not None:
            for labels, job_target in _job_targets(config, inst):
                if job_target is not None:
                    n = seen[job_target.name] = seen.get(job_target.name, 0) + 1
                    if n > 1:
                        job_target = _replace_name(job_target, f"{job_target.name}#{n}")
                out.append(DiscoveredTarget(index, labels, job_target))
            continue
        for raw_url in inst.urls:
            parts = urlsplit(_normalize_url(raw_url))
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])  # credentials are never labels
            url = urlunsplit(parts)
            labels = _target_labels(config, inst, index, url)
            labels.update(__address__=parts.netloc, __scheme__=parts.scheme, __metrics_path__=parts.path)
            for key, value in parse_qsl(parts.query, keep_blank_values=True):
                labels.setdefault(f"__param_{key}", value)
            target = _build_one(config, inst, index, raw_url)
            if target is not None:
                n = seen[target.name] = seen.get(target.name, 0) + 1
                if n > 1:
                    target = _replace_name(target, f"{target.name}#{n}")
            out.append(DiscoveredTarget(index, labels, target))
    return out
