"""Prometheus configuration files: a table of prometheus.yml snippets → targets, labels and settings;
unsupported options warn once with their line (errors with strict=True); bad values are file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import format_prometheus_duration, parse_prometheus_duration
from kubescrape.config.prometheus import load_prometheus
from kubescrape.errors import ConfigError
from kubescrape.scrape.targets import Target, build_targets, make_labeler, synthetic_labels


def write(tmp_path: Path, text: str, name: str = "prometheus.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def targets_of(tmp_path: Path, text: str) -> list[Target]:
    return build_targets(load_prometheus(write(tmp_path, text)))


# --- snippets → targets -------------------------------------------------------------------------------

TARGET_TABLE: list[tuple[str, str, list[tuple[str, dict[str, str]]]]] = [
    (
        "defaults: job, instance = address, /metrics over http",
        """
        scrape_configs:
          - job_name: node
            static_configs: [{targets: ["10.0.0.1:9100"]}]
        """,
        [("http://10.0.0.1:9100/metrics", {"job": "node", "instance": "10.0.0.1:9100"})],
    ),
    (
        "static labels, scheme, metrics_path, params (sorted, repeated values kept)",
        """
        scrape_configs:
          - job_name: probe
            scheme: https
            metrics_path: /probe
            params: {target: ["a b"], module: [http_2xx, second]}
            static_configs:
              - targets: ["h:9115"]
                labels: {env: prod}
        """,
        [("https://h:9115/probe?module=http_2xx&module=second&target=a+b",
          {"job": "probe", "instance": "h:9115", "env": "prod"})],
    ),
    (
        "a port is added from the scheme after relabeling, and instance shows it",
        """
        scrape_configs:
          - job_name: a
            static_configs: [{targets: ["plain"]}]
          - job_name: b
            scheme: https
            static_configs: [{targets: ["secure", "[::1]"]}]
        """,
        [("http://plain:80/metrics", {"job": "a", "instance": "plain:80"}),
         ("https://secure:443/metrics", {"job": "b", "instance": "secure:443"}),
         ("https://[::1]:443/metrics", {"job": "b", "instance": "[::1]:443"})],
    ),
    (
        "relabel_configs rewrite __address__, __metrics_path__, __param_x, __scheme__ and instance; drop",
        """
        scrape_configs:
          - job_name: blackbox
            params: {module: [m]}
            static_configs:
              - targets: ["https://example.org", "skip.example"]
            relabel_configs:
              - source_labels: [__address__]
                regex: skip\\..*
                action: drop
              - source_labels: [__address__]
                target_label: __param_target
              - source_labels: [__param_target]
                target_label: instance
              - target_label: __address__
                replacement: 127.0.0.1:9115
              - target_label: __metrics_path__
                replacement: /probe
              - target_label: __scheme__
                replacement: https
        """,
        [("https://127.0.0.1:9115/probe?module=m&target=https%3A%2F%2Fexample.org",
          {"job": "blackbox", "instance": "https://example.org"})],
    ),
    (
        "a static label named job wins over job_name; the internal labels never reach the target",
        """
        scrape_configs:
          - job_name: j
            static_configs:
              - targets: ["h:1"]
                labels: {job: mine, __meta_x: y, __tmp: z}
            relabel_configs:
              - source_labels: [__meta_x]
                target_label: from_meta
        """,
        [("http://h:1/metrics", {"job": "mine", "instance": "h:1", "from_meta": "y"})],
    ),
    (
        "label values and relabel fields YAML reads as booleans or numbers are taken as written",
        """
        scrape_configs:
          - job_name: typed
            static_configs:
              - targets: ["h:1"]
                labels: {canary: true, version: 1.10, big: 1e3, empty: }
            relabel_configs:
              - target_label: replaced
                replacement: 010
        """,
        [("http://h:1/metrics", {"job": "typed", "instance": "h:1", "canary": "true", "version": "1.10",
                                 "big": "1e3", "replaced": "010"})],
    ),
    (
        "identical targets are scraped once, as Prometheus deduplicates them",
        """
        scrape_configs:
          - job_name: j
            static_configs:
              - targets: ["h:1", "h:1"]
              - targets: ["h:1"]
        """,
        [("http://h:1/metrics", {"job": "j", "instance": "h:1"})],
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), TARGET_TABLE, ids=[c[0] for c in TARGET_TABLE])
def test_targets_from_snippet(tmp_path: Path, case: str, text: str,
                              expected: list[tuple[str, dict[str, str]]]) -> None:
    got = [(t.url, t.label_dict) for t in targets_of(tmp_path, text)]
    assert got == expected


INTERVALS = """
        global:
          scrape_interval: 30s
        scrape_configs:
          - job_name: default
            static_configs: [{targets: ["a:1"]}]
          - job_name: fast
            scrape_interval: 5s
            static_configs: [{targets: ["b:1"]}]
          - job_name: own
            scrape_interval: 1m30s
            scrape_timeout: 20s
            static_configs: [{targets: ["c:1", "d:1"]}]
            relabel_configs:
              - source_labels: [__address__]
                regex: d:1
                target_label: __scrape_interval__
                replacement: 2m
        """


def test_intervals_timeouts_and_per_target_interval_labels(tmp_path: Path) -> None:
    targets = targets_of(tmp_path, INTERVALS)
    got = {t.label_dict["instance"]: (t.interval, t.timeout) for t in targets}
    # The global timeout (10s) is capped by a shorter job interval, as Prometheus does.
    assert got == {"a:1": (30.0, 10.0), "b:1": (5.0, 5.0), "c:1": (90.0, 20.0), "d:1": (120.0, 20.0)}


def test_scrape_settings_map_onto_the_target(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "pass").write_text("s3cret\n")
    config = load_prometheus(write(tmp_path, """
        scrape_configs:
          - job_name: kubelet
            scheme: https
            honor_labels: true
            honor_timestamps: false
            enable_compression: false
            track_timestamps_staleness: true
            body_size_limit: 10MB
            sample_limit: 100
            label_limit: 30
            label_name_length_limit: 40
            label_value_length_limit: 50
            bearer_token_file: token
            tls_config:
              ca_file: /etc/ca.crt
              cert_file: client.crt
              key_file: client.key
              server_name: kubelet.local
              insecure_skip_verify: false
              min_version: TLS12
              max_version: TLS13
            metric_relabel_configs:
              - source_labels: [__name__]
                regex: go_.*
                action: drop
            static_configs: [{targets: ["127.0.0.1:10250"]}]
          - job_name: basic
            basic_auth: {username: alice, password_file: pass}
            static_configs: [{targets: ["h:1"]}]
          - job_name: other_auth
            authorization: {type: Token, credentials: xyz}
            static_configs: [{targets: ["h:2"]}]
        """))
    kubelet, basic, other = build_targets(config)
    assert kubelet.honor_labels and not kubelet.honor_timestamps and not kubelet.enable_compression
    assert kubelet.track_timestamps_staleness
    assert (kubelet.body_size_limit, kubelet.sample_limit, kubelet.label_limit) == (10 << 20, 100, 30)
    assert (kubelet.label_name_length_limit, kubelet.label_value_length_limit) == (40, 50)
    assert kubelet.bearer_token_file == str(tmp_path / "token")  # relative to the file, re-read per scrape
    assert kubelet.tls.use_tls and kubelet.tls.ca_file == "/etc/ca.crt"
    assert kubelet.tls.cert_file == str(tmp_path / "client.crt")
    assert kubelet.tls.key_file == str(tmp_path / "client.key")
    assert (kubelet.tls.server_name, kubelet.tls.min_version, kubelet.tls.max_version) == (
        "kubelet.local", "1.2", "1.3")
    assert [r.regex for r in kubelet.metric_relabel_configs] == ["go_.*"]
    assert (basic.username, basic.password) == ("alice", "s3cret")
    assert basic.body_size_limit == 0  # Prometheus' default: no limit
    assert dict(other.headers) == {"Authorization": "Token xyz"}
    assert config.global_.omit_hostname and config.global_.interval == 60.0


def test_external_labels_are_added_to_every_series_that_lacks_them(tmp_path: Path) -> None:
    (target,) = targets_of(tmp_path, """
        global:
          external_labels: {cluster: c1, region: r}
        scrape_configs:
          - job_name: j
            static_configs: [{targets: ["h:1"]}]
        """)
    assert "cluster" not in target.label_dict  # not a target label: honor_labels does not see it
    label = make_labeler(target)
    assert label("m", [("region", "mine")]) == [
        ("__name__", "m"), ("cluster", "c1"), ("instance", "h:1"), ("job", "j"), ("region", "mine")]
    assert ("cluster", "c1") in synthetic_labels(target, "up")


def test_remote_write_maps_onto_writers_and_queue_settings(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    config = load_prometheus(write(tmp_path, """
        remote_write:
          - url: https://mimir.example/api/v1/push
            name: mimir
            remote_timeout: 10s
            headers: {X-Scope-OrgID: tenant-1}
            basic_auth: {username: u, password_file: pw}
            tls_config: {ca_file: ca.pem, insecure_skip_verify: true}
            queue_config:
              capacity: 5000
              max_shards: 8
              min_shards: 2
              max_samples_per_send: 1000
              min_backoff: 50ms
              max_backoff: 10s
          - url: http://127.0.0.1:9090/api/v1/write
            authorization: {credentials: abc}
        """))
    first, second = config.writers
    assert first.url == "https://mimir.example/api/v1/push" and first.timeout == 10.0
    assert first.headers == {"X-Scope-OrgID": "tenant-1"}
    assert (first.basic_auth_user, first.basic_auth_pass) == ("u", "hunter2")
    assert first.tls_ca == str(tmp_path / "ca.pem") and first.insecure_skip_verify
    assert (first.min_shards, first.max_shards, first.min_backoff, first.max_backoff) == (2, 8, 0.05, 10.0)
    assert (config.writer_opt.batch, config.writer_opt.chan_size) == (1000, 5000)
    assert second.headers == {"Authorization": "Bearer abc"} and second.timeout == 30.0
    assert config.warnings == []


# --- unsupported options: one warning each, with the line ----------------------------------------------

UNSUPPORTED = """
global:
  scrape_interval: 15s
  evaluation_interval: 15s
  query_log_file: q.log
rule_files: [rules.yml]
alerting:
  alertmanagers: [{static_configs: [{targets: ["am:9093"]}]}]
remote_read:
  - url: http://r/read
scrape_configs:
  - job_name: pods
    kubernetes_sd_configs:
      - role: pod
    file_sd_configs:
      - files: [x.json]
    scrape_classic_histograms: true
    oauth2: {client_id: x}
    static_configs: [{targets: ["h:1"]}]
remote_write:
  - url: http://w/api/v1/write
    write_relabel_configs: [{action: drop, regex: x, source_labels: [__name__]}]
    queue_config: {batch_send_deadline: 5s}
"""


def test_every_unsupported_option_warns_once_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, UNSUPPORTED)
    config = load_prometheus(path)
    expected = {
        4: "global.query_log_file",
        5: "rule_files",
        6: "alerting",
        8: "remote_read",
        14: "scrape_configs[0].file_sd_configs",
        16: "scrape_configs[0].scrape_classic_histograms",
        17: "scrape_configs[0].oauth2",
        22: "remote_write[0].queue_config.batch_send_deadline",
    }
    assert len(config.warnings) == len(expected)
    for line, name in expected.items():
        matching = [w for w in config.warnings if w.startswith(f"{path}:{line}: {name} ")]
        assert len(matching) == 1, (line, name, config.warnings)
    assert not any("evaluation_interval" in w for w in config.warnings)
    # One remote_write: its write_relabel_configs apply to every series (see the write relabel tests).
    assert [r.regex for r in config.instances[0].write_relabel_configs] == ["x"]
    # The static targets of a job with an unsupported discovery still run; the Kubernetes discovery
    # settings are kept as written, for the discovery module (kubescrape.discovery), without a warning.
    assert [t.url for t in build_targets(config)] == ["http://h:1/metrics"]
    assert config.instances[0].kubernetes_sd_configs == [{"role": "pod"}]


def test_strict_turns_the_first_unsupported_option_into_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, UNSUPPORTED)
    with pytest.raises(ConfigError) as info:
        load_prometheus(path, strict=True)
    assert (info.value.file, info.value.line, info.value.key) == (str(path), 5, "rule_files")
    assert "--strict" in (info.value.fix or "")


# --- bad values: file:line errors with the fix -----------------------------------------------------------

ERRORS: list[tuple[str, str, int, str, str]] = [
    ("duration without unit", """
scrape_configs:
  - job_name: a
    scrape_interval: 15
""", 3, "scrape_configs[0].scrape_interval", "not a valid duration"),
    ("Go-only duration syntax", """
global:
  scrape_timeout: 1.5s
""", 2, "global.scrape_timeout", "not a valid duration"),
    ("timeout above interval", """
scrape_configs:
  - job_name: a
    scrape_interval: 5s
    scrape_timeout: 10s
""", 4, "scrape_configs[0].scrape_timeout", "greater than scrape interval"),
    ("unknown option (a typo)", """
scrape_configs:
  - job_name: a
    metric_path: /m
""", 3, "scrape_configs[0].metric_path", "unknown option"),
    ("duplicate job names", """
scrape_configs:
  - job_name: a
  - job_name: a
""", 3, "scrape_configs[1].job_name", "multiple scrape configs"),
    ("URL as a target without relabel_configs", """
scrape_configs:
  - job_name: a
    static_configs:
      - targets:
          - http://h:1/metrics
""", 5, "scrape_configs[0].static_configs[0].targets[0]", "not a valid hostname"),
    ("static label name", """
scrape_configs:
  - job_name: a
    static_configs:
      - targets: ["h:1"]
        labels:
          bad-name: x
""", 6, "scrape_configs[0].static_configs[0].labels.bad-name", "not a valid label name"),
    ("bad relabel action", """
scrape_configs:
  - job_name: a
    relabel_configs:
      - action: replace
        regex: x
""", 4, "scrape_configs[0].relabel_configs[0]", "requires 'target_label'"),
    ("bad regex", """
scrape_configs:
  - job_name: a
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: "a("
        action: drop
""", 5, "scrape_configs[0].metric_relabel_configs[0].regex", "does not compile"),
    ("bad scheme", """
scrape_configs:
  - job_name: a
    scheme: ftp
""", 3, "scrape_configs[0].scheme", "'http' or 'https'"),
    ("bad size", """
scrape_configs:
  - job_name: a
    body_size_limit: 10 MB
""", 3, "scrape_configs[0].body_size_limit", "not a size"),
    ("negative limit", """
scrape_configs:
  - job_name: a
    sample_limit: -1
""", 3, "scrape_configs[0].sample_limit", "non-negative"),
    ("two auth methods", """
scrape_configs:
  - job_name: a
    bearer_token: x
    basic_auth: {username: u}
""", 1, "", "at most one of"),
    ("reserved remote-write header", """
remote_write:
  - url: http://w/api/v1/write
    headers:
      Authorization: Bearer x
""", 4, "remote_write[0].headers.Authorization", "reserved header"),
    ("bad remote-write url", """
remote_write:
  - url: ftp://w/api/v1/write
""", 2, "remote_write[0].url", "not an http"),
    ("bad TLS version", """
scrape_configs:
  - job_name: a
    tls_config: {min_version: "1.2"}
""", 3, "scrape_configs[0].tls_config.min_version", "unknown TLS version"),
    ("duplicate key", """
global:
  scrape_interval: 1m
  scrape_interval: 2m
""", 3, "global.scrape_interval", "defined twice"),
    ("YAML syntax", """
scrape_configs:
  - job_name: a
   static_configs: []
""", 3, "", "not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "line", "key", "cause"), ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_values_name_file_line_key_and_fix(tmp_path: Path, case: str, text: str, line: int, key: str,
                                               cause: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_prometheus(path)
    err = info.value
    assert err.file == str(path)
    if case == "two auth methods":
        assert err.line in (3, 4)
    else:
        assert (err.line, err.key or "") == (line, key), str(err)
    assert cause in str(err)
    assert err.fix


def test_errors_never_show_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, """
        remote_write:
          - url: "ftp://alice:topsecret@w/api/v1/write"
        """)
    with pytest.raises(ConfigError) as info:
        load_prometheus(path)
    assert "topsecret" not in str(info.value)


def test_a_missing_secret_file_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        remote_write:
          - url: http://w/api/v1/write
            bearer_token_file: /nonexistent/token
        """)
    with pytest.raises(ConfigError) as info:
        load_prometheus(path)
    assert info.value.line == 3 and "/nonexistent/token" in str(info.value)


def test_writer_urls_replace_remote_write(tmp_path: Path) -> None:
    path = write(tmp_path, """
        remote_write: [{url: "http://a/api/v1/write"}]
        """)
    config = load_prometheus(path, writer_urls=["http://b:9090/api/v1/write"])
    assert [w.url for w in config.writers] == ["http://b:9090/api/v1/write"]


def test_an_empty_file_is_a_valid_configuration(tmp_path: Path) -> None:
    config = load_prometheus(write(tmp_path, "# nothing yet\n"))
    assert config.instances == [] and config.writers == [] and config.global_.interval == 60.0


# --- durations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds", "shown"), [
    ("15s", 15.0, "15s"), ("1m30s", 90.0, "1m30s"), ("90s", 90.0, "1m30s"), ("0", 0.0, "0s"),
    ("500ms", 0.5, "500ms"), ("1h", 3600.0, "1h"), ("1d", 86400.0, "1d"), ("2w", 14 * 86400.0, "2w"),
    ("1y", 365 * 86400.0, "1y"), ("8d", 8 * 86400.0, "8d"), ("14d", 14 * 86400.0, "2w"),
])
def test_prometheus_durations(text: str, seconds: float, shown: str) -> None:
    assert parse_prometheus_duration(text) == seconds
    assert format_prometheus_duration(seconds) == shown


@pytest.mark.parametrize("text", ["", "15", "1.5s", "1s1m", "-1s", "1 s", "1us"])
def test_invalid_prometheus_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_prometheus_duration(text)


# --- Categraf's bridge ----------------------------------------------------------------------------------


def test_categraf_prometheus_section_loads_the_scrape_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    write(conf, """
        scrape_configs:
          - job_name: apiserver
            scheme: https
            static_configs: [{targets: ["10.0.0.1:6443"]}]
        remote_write:
          - url: http://127.0.0.1:9090/api/v1/write
          - url: http://n9e:17000/prometheus/v1/write
        """, "in_cluster_scrape.yaml")
    (conf / "config.toml").write_text(textwrap.dedent("""
        [global]
        hostname = "node-1"
        labels = { region = "r1" }

        [[writers]]
        url = "http://127.0.0.1:9090/api/v1/write"

        [prometheus]
        enable = true
        scrape_config_file = "in_cluster_scrape.yaml"
        log_level = "info"
        """))
    (conf / "input.prometheus" / "prometheus.toml").write_text(textwrap.dedent("""
        [[instances]]
        urls = ["http://127.0.0.1:10249/metrics"]
        """))
    config = load_categraf(conf)
    by_url = {t.url: t for t in build_targets(config)}
    kube_proxy = by_url["http://127.0.0.1:10249/metrics"]
    apiserver = by_url["https://10.0.0.1:6443/metrics"]
    assert kube_proxy.label_dict["agent_hostname"] == "node-1"  # Categraf's instance keeps its labels
    assert apiserver.label_dict == {"job": "apiserver", "instance": "10.0.0.1:6443"}
    assert apiserver.external_labels == (("region", "r1"),)
    assert [w.url for w in config.writers] == ["http://127.0.0.1:9090/api/v1/write",
                                               "http://n9e:17000/prometheus/v1/write"]
    assert str(conf / "in_cluster_scrape.yaml") in config.files
    assert config.warnings == []


def test_categraf_prometheus_section_needs_an_existing_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.toml").write_text('[prometheus]\nenable = true\nscrape_config_file = "nope.yaml"\n')
    with pytest.raises(ConfigError) as info:
        load_categraf(conf)
    assert info.value.line == 3 and "nope.yaml" in str(info.value)


def test_categraf_prometheus_section_disabled_is_ignored(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.toml").write_text('[prometheus]\nenable = false\nscrape_config_file = "nope.yaml"\n')
    config = load_categraf(conf)
    assert config.instances == []


def test_a_target_prometheus_refuses_after_relabeling_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    targets = targets_of(tmp_path, """
        scrape_configs:
          - job_name: j
            static_configs: [{targets: ["http://h:1/metrics", "ok:1", "gone:1"]}]
            relabel_configs:
              - source_labels: [__address__]
                regex: gone:1
                target_label: __address__
                replacement: ""
        """)
    assert [t.url for t in targets] == ["http://ok:1/metrics"]
    assert "not a valid hostname" in caplog.text and "no address" in caplog.text


def test_redacted_configuration_hides_every_secret_of_a_prometheus_file(tmp_path: Path) -> None:
    config = load_prometheus(write(tmp_path, """
        scrape_configs:
          - job_name: j
            basic_auth: {username: u, password: pw-secret}
            static_configs: [{targets: ["h:1"]}]
            kubernetes_sd_configs:
              - role: node
                api_server: https://admin:url-secret@k8s:6443
                authorization: {credentials: sd-secret}
          - job_name: k
            authorization: {type: Token, credentials: token-secret}
            static_configs: [{targets: ["h:2"]}]
          - job_name: b
            bearer_token: bearer-secret
            static_configs: [{targets: ["h:3"]}]
        remote_write:
          - url: http://w/api/v1/write
            basic_auth: {username: u, password: rw-secret}
          - url: http://w2/api/v1/write
            authorization: {credentials: rw-token}
        """))
    shown = repr(config.redacted())
    for secret in ("pw-secret", "url-secret", "sd-secret", "token-secret", "bearer-secret", "rw-secret",
                   "rw-token"):
        assert secret not in shown


def test_unimplemented_options_set_to_what_kubescrape_does_anyway_do_not_warn(tmp_path: Path) -> None:
    config = load_prometheus(write(tmp_path, """
        scrape_configs:
          - job_name: generated
            follow_redirects: true
            enable_http2: true
            scrape_classic_histograms: false
            kubernetes_sd_configs: []
            static_configs: [{targets: ["h:1"]}]
          - job_name: asks_more
            follow_redirects: false
            static_configs: [{targets: ["h:2"]}]
        remote_write:
          - url: http://w/api/v1/write
            send_exemplars: false
            metadata_config: {send: false}
        """))
    assert config.warnings == [
        f"{tmp_path / 'prometheus.yml'}:9: scrape_configs[1].follow_redirects is not implemented by "
        "kubescrape; ignored"]


WRITE_RELABEL = """
scrape_configs:
  - job_name: j
    static_configs: [{targets: ["h:1"]}]
remote_write:
  - url: http://w/api/v1/write
    write_relabel_configs:
      - source_labels: [__name__]
        regex: "go_.*"
        action: drop
      - source_labels: [cluster]
        target_label: region
        replacement: r-$1
"""


def test_write_relabel_configs_apply_last_to_every_series(tmp_path: Path) -> None:
    text = "global:\n  external_labels: {cluster: c1}\n" + WRITE_RELABEL
    (target,) = build_targets(load_prometheus(write(tmp_path, text)))
    label = make_labeler(target)
    assert label("go_goroutines", []) is None
    assert label("http_requests_total", [("code", "200")]) == [
        ("__name__", "http_requests_total"), ("cluster", "c1"), ("code", "200"), ("instance", "h:1"),
        ("job", "j"), ("region", "r-c1")]
    # up et al. are relabeled too, never dropped.
    assert ("region", "r-c1") in synthetic_labels(target, "up")


def test_write_relabel_configs_that_differ_between_writers_are_named(tmp_path: Path) -> None:
    text = WRITE_RELABEL + """  - url: http://w2/api/v1/write
    write_relabel_configs:
      - regex: x
        action: labeldrop
"""
    path = write(tmp_path, text)
    config = load_prometheus(path)
    assert config.instances[0].write_relabel_configs == []
    assert [w.split(": ")[0] for w in config.warnings] == [f"{path}:6", f"{path}:14"]
    assert all("different rules" in w for w in config.warnings)
    with pytest.raises(ConfigError):
        load_prometheus(path, strict=True)


def test_write_relabel_configs_are_not_applied_for_writers_that_replace_the_files(tmp_path: Path) -> None:
    config = load_prometheus(write(tmp_path, WRITE_RELABEL), writer_urls=["http://b:9090/api/v1/write"])
    assert config.instances[0].write_relabel_configs == []
    assert len(config.warnings) == 1 and "--writer-url" in config.warnings[0]
