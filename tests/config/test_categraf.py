"""Loading Categraf-layout directories: the seed files, every option, warnings, errors, expansion."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from kubescrape.config.categraf import load_categraf, os_expand
from kubescrape.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data"
SEED = DATA / "categraf_seed"


def write_dir(tmp_path: Path, config: str, inputs: dict[str, str] | None = None) -> Path:
    (tmp_path / "config.toml").write_text(config)
    if inputs:
        (tmp_path / "input.prometheus").mkdir()
        for name, text in inputs.items():
            (tmp_path / "input.prometheus" / name).write_text(text)
    return tmp_path


def test_seed_loads_unmodified_with_hostname_from_env() -> None:
    cfg = load_categraf(SEED, env={"HOSTNAME": "10.206.0.16"})
    assert cfg.warnings == []
    assert cfg.global_.hostname == "10.206.0.16"
    assert cfg.global_.interval == 15.0
    assert cfg.global_.providers == ["local"]
    assert cfg.scrape_interval == 15.0
    assert (cfg.writer_opt.batch, cfg.writer_opt.chan_size) == (2000, 10000)
    [w] = cfg.writers
    assert w.url == "http://10.206.0.16:19000/prometheus/v1/write"
    assert (w.timeout, w.dial_timeout, w.max_idle_conns_per_host) == (5.0, 2.5, 100)
    assert [i.urls for i in cfg.instances] == [
        ["http://127.0.0.1:10249/metrics"],
        ["https://127.0.0.1:10250/metrics"],
        ["https://127.0.0.1:10250/metrics/cadvisor"],
    ]
    assert [i.labels["job"] for i in cfg.instances] == ["kube-proxy", "kubelet", "cadvisor"]
    proxy, kubelet, cadvisor = cfg.instances
    assert not proxy.use_tls and proxy.bearer_token_file is None
    for inst in (kubelet, cadvisor):
        assert inst.use_tls and inst.insecure_skip_verify
        assert inst.bearer_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
        assert inst.timeout == 3.0
    assert cfg.files == [str(SEED / "config.toml"), str(SEED / "input.prometheus" / "prometheus.toml")]


def test_seed_hostname_falls_back_to_os_hostname_when_env_lacks_it() -> None:
    cfg = load_categraf(SEED, env={})
    assert cfg.global_.hostname == socket.gethostname()


def test_every_option_maps_and_unknown_options_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kubescrape.config"):
        env = {"NODE_NAME": "n1", "HOSTIP": "10.0.0.5", "ZONE": "z1"}
        cfg = load_categraf(DATA / "config_unknown", env=env)
    g = cfg.global_
    assert g.hostname == "n1-10.0.0.5"
    assert g.interval == 30.0
    assert g.labels == {"region": "sh", "node": "n1-10.0.0.5"}
    assert cfg.input_interval == 10.0 and cfg.scrape_interval == 10.0
    # batch = 0 means the default, as in Categraf.
    assert (cfg.writer_opt.batch, cfg.writer_opt.chan_size) == (2000, 500)
    [w] = cfg.writers
    assert (w.basic_auth_user, w.basic_auth_pass) == ("u", "p")
    assert w.headers == {"X-From": "categraf", "X-Tenant": "t1"}
    assert (w.timeout, w.dial_timeout, w.max_idle_conns_per_host) == (1.5, 0.2, 7)
    assert (w.tls_ca, w.insecure_skip_verify, w.max_shards) == ("/etc/ca.pem", True, 8)
    [inst] = cfg.instances
    assert inst.urls == ["https://10.0.0.5:10250/metrics"]
    assert (inst.url_label_key, inst.url_label_value) == ("target", "{{.Hostname}}:{{.Port}}")
    assert inst.labels == {"job": "kubelet", "node": "n1-10.0.0.5", "zone": "z1"}
    assert (inst.interval_times, inst.timeout) == (2, 1.5)
    assert inst.bearer_token_string == "tok" and (inst.username, inst.password) == ("admin", "secret")
    assert inst.headers == {"X-A": "1"}
    assert inst.ignore_metrics == ["go_*"] and inst.ignore_label_keys == ["id", "pod_*"]
    assert (inst.tls_ca, inst.tls_cert, inst.tls_key) == ("/ca.pem", "/cert.pem", "/key.pem")
    assert (inst.tls_server_name, inst.tls_min_version) == ("kubelet", "1.2")
    assert inst.insecure_skip_verify is False
    assert (inst.honor_labels, inst.honor_timestamps, inst.body_size_limit) == (True, False, 1000)
    assert inst.enable_compression is False
    # Categraf replaces an empty replacement with "$1".
    [rc] = inst.relabel_configs
    assert (rc.action, rc.regex, rc.replacement, rc.source_labels) == ("drop", "up", "$1", ["__name__"])
    [mrc] = inst.metric_relabel_configs
    assert (mrc.target_label, mrc.replacement) == ("cluster", "c1")

    conf = str(DATA / "config_unknown" / "config.toml")
    prom = str(DATA / "config_unknown" / "input.prometheus" / "prometheus.toml")
    expected = [
        f"{conf}:5: unknown option 'colour' in [global]",
        f"{conf}:26: unknown option 'retry_forever' in [[writers]] #1",
        f"{prom}:28: unknown option 'scrape_every' in [[instances]] #1",
        f"{conf}: unknown option 'mystery'",
        f"{conf}: [heartbeat] is a Categraf feature kubescrape does not implement",
    ]
    for text in expected:
        assert any(w.startswith(text) for w in cfg.warnings), (text, cfg.warnings)
    # Collected, not logged: the caller (run, demo) prints them, so each appears once.
    assert not [r for r in caplog.records if r.name == "kubescrape.config"]
    # [http] enable = false is known and off: no warning.
    assert not any("[http]" in w for w in cfg.warnings)
    assert len(cfg.warnings) == len(expected)


def test_bad_value_names_file_line_key_and_expectation() -> None:
    with pytest.raises(ConfigError) as info:
        load_categraf(DATA / "config_badvalue")
    err = info.value
    assert err.file == str(DATA / "config_badvalue" / "input.prometheus" / "prometheus.toml")
    assert err.line == 9
    assert err.key == "instances[1].interval_times"
    assert "'often'" in err.cause and "integer" in err.cause
    assert err.fix is not None and "non-negative integer" in err.fix
    assert str(err).startswith(f"{err.file}:9 [instances[1].interval_times]: ")


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    write_dir(tmp_path, '[global]\nhostname = "a"\ninterval = \n')
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_categraf(tmp_path)
    assert info.value.line == 3
    assert info.value.file == str(tmp_path / "config.toml")
    assert info.value.fix


def test_missing_dir_and_missing_config_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_categraf(tmp_path / "nope")
    assert "--config-dir" in (info.value.fix or "")
    with pytest.raises(ConfigError, match=r"config\.toml not found"):
        load_categraf(tmp_path)


def test_no_input_dir_warns_and_loads(tmp_path: Path) -> None:
    cfg = load_categraf(write_dir(tmp_path, "[global]\nhostname = 'h'\n"), env={})
    assert cfg.instances == [] and cfg.writers == []
    assert any("nothing to scrape" in w for w in cfg.warnings)


def test_writer_urls_replace_writers() -> None:
    cfg = load_categraf(SEED, env={"HOSTNAME": "h"}, writer_urls=["http://127.0.0.1:9090/api/v1/write",
                                                                     "https://b:443/w"])
    assert [w.url for w in cfg.writers] == ["http://127.0.0.1:9090/api/v1/write", "https://b:443/w"]
    with pytest.raises(ConfigError, match="--writer-url"):
        load_categraf(SEED, env={"HOSTNAME": "h"}, writer_urls=["127.0.0.1:9090"])


def test_bad_writer_value_points_at_its_line(tmp_path: Path) -> None:
    write_dir(tmp_path, '[[writers]]\nurl = "http://a:1/w"\n\n'
              '[[writers]]\nurl = "http://b:1/w"\ntimeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_categraf(tmp_path, env={})
    assert (info.value.line, info.value.key) == (6, "writers[1].timeout")


def test_odd_headers_rejected(tmp_path: Path) -> None:
    write_dir(tmp_path, '[[writers]]\nurl = "http://a:1/w"\nheaders = ["X-From"]\n')
    with pytest.raises(ConfigError, match="even number") as info:
        load_categraf(tmp_path, env={})
    assert info.value.line == 3


def test_invalid_relabel_rule_is_a_config_error(tmp_path: Path) -> None:
    write_dir(tmp_path, "", {"p.toml": '[[instances]]\nurls = ["http://a:1/m"]\n'
                             '[[instances.relabel_configs]]\nsource_labels = ["job"]\naction = "hashmod"\n'})
    with pytest.raises(ConfigError, match="non-zero modulus") as info:
        load_categraf(tmp_path, env={})
    assert info.value.key == "instances[0].relabel_configs"


def test_inputs_from_several_files_in_name_order_and_extra_main_files_merged(tmp_path: Path) -> None:
    write_dir(
        tmp_path,
        "[global]\nhostname = 'h'\n",
        {"b.toml": '[[instances]]\nurls = ["http://b:1/m"]\n', "a.toml": '[[instances]]\nurls = ["http://a:1/m"]\n'},
    )
    (tmp_path / "writers.toml").write_text('[[writers]]\nurl = "http://w:1/w"\n')
    cfg = load_categraf(tmp_path, env={})
    assert [i.urls[0] for i in cfg.instances] == ["http://a:1/m", "http://b:1/m"]
    assert [w.url for w in cfg.writers] == ["http://w:1/w"]
    (tmp_path / "dup.toml").write_text("[global]\ninterval = 5\n")
    with pytest.raises(ConfigError, match="defined both"):
        load_categraf(tmp_path, env={})


def test_hostname_forms(tmp_path: Path) -> None:
    os_name = socket.gethostname()
    cases = {
        "": os_name,
        "$hostname-x": f"{os_name}-x",
        "fixed": "fixed",
        "  padded  ": "padded",
        "${NODE}.$ZONE": "n9.z",
        "$ip": "192.0.2.7",
    }
    for raw, want in cases.items():
        write_dir(tmp_path, f'[global]\nhostname = "{raw}"\n')
        cfg = load_categraf(tmp_path, env={"NODE": "n9", "ZONE": "z", "HOSTIP": "192.0.2.7"})
        assert cfg.global_.hostname == want, raw
    write_dir(tmp_path, '[global]\nhostname = "${UNSET}"\n')
    cfg = load_categraf(tmp_path, env={})
    assert cfg.global_.hostname == os_name
    assert any("expanded to an empty string" in w for w in cfg.warnings)


def test_large_integer_instance_timeout_warns(tmp_path: Path) -> None:
    write_dir(tmp_path, "", {"p.toml": '[[instances]]\nurls = ["http://a:1/m"]\ntimeout = 5000\n'})
    cfg = load_categraf(tmp_path, env={})
    assert cfg.instances[0].timeout == 5000.0
    assert any("timeout = 5000" in w for w in cfg.warnings)


def test_enabled_consul_warns(tmp_path: Path) -> None:
    write_dir(tmp_path, "", {"p.toml": '[[instances]]\nurls = ["http://a:1/m"]\n'
                             '[instances.consul]\nenabled = true\nagent = "http://c:8500"\n'})
    cfg = load_categraf(tmp_path, env={})
    assert any("Consul" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("$A", "alpha"),
        ("${A}", "alpha"),
        ("${A}_x", "alpha_x"),
        ("$A_x", ""),
        ("x-$A-y", "x-alpha-y"),
        ("$$", "<$>"),
        ("${}", ""),
        ("${A", "A"),  # Go eats the unterminated "${"
        ("a$", "a$"),
        ("$-", "<->"),
        ("$1", "<1>"),
        ("cost: $5", "cost: <5>"),
        ("no vars", "no vars"),
    ],
)
def test_os_expand_matches_go(text: str, want: str) -> None:
    env = {"A": "alpha"}
    assert os_expand(text, lambda k: env.get(k, f"<{k}>" if not k[0].isalpha() else "")) == want


@pytest.mark.parametrize("interval", ["0", "-5", '"0s"', '"-1m"'])
@pytest.mark.parametrize("fast", [True, False])
def test_non_positive_input_interval_falls_back_to_global_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: str, fast: bool
) -> None:
    # Categraf's input reader: `if r.input.GetInterval() > 0 { interval = ... }`, else config.GetInterval().
    monkeypatch.setattr("kubescrape.config.resolve.ENABLED", fast)
    inputs = {"prometheus.toml": f'interval = {interval}\n[[instances]]\nurls = ["http://127.0.0.1:9100/metrics"]\n'}
    cfg = load_categraf(write_dir(tmp_path, "[global]\ninterval = 30\n", inputs))
    assert cfg.input_interval is not None and cfg.input_interval <= 0
    assert cfg.scrape_interval == 30.0
