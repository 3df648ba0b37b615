"""Every option is applied or said to be ignored; ``[log]`` builds the handler; the seed documents load."""

from __future__ import annotations

import io
import logging
import logging.handlers
import re
from pathlib import Path

import pytest

from kubescrape.config.categraf import load_categraf
from kubescrape.config.logfile import log_handler
from kubescrape.config.models import LogConfig, WriterConfig
from kubescrape.errors import ConfigError
from tests.conftest import SEEDS


def write(tmp_path: Path, config: str, prometheus: str = "") -> Path:
    (tmp_path / "config.toml").write_text(config)
    (tmp_path / "input.prometheus").mkdir(exist_ok=True)
    (tmp_path / "input.prometheus" / "prometheus.toml").write_text(prometheus)
    return tmp_path


def test_accepted_but_unapplied_options_warn(tmp_path: Path) -> None:
    log_file = tmp_path / "agent.log"
    cfg = load_categraf(write(
        tmp_path,
        f'[global]\nconcurrency = 4\nprecision = "s"\n[log]\nfile_name = "{log_file}"\ncompress = true\n'
        "max_age = 7\n",
        '[[instances]]\nurls = ["http://127.0.0.1:9100/metrics"]\nduplication_allowed = true\n',
    ), env={})
    joined = "\n".join(cfg.warnings)
    for words in ("concurrency = 4 is not applied", "precision = 's' is not applied",
                  "duplication_allowed is not applied", "compress = true is not supported",
                  "max_age = 7 is not applied"):
        assert words in joined, (words, cfg.warnings)
    assert len(cfg.warnings) == 5
    assert cfg.log == LogConfig(file_name=str(log_file), compress=True, max_age=7)


def test_categraf_defaults_do_not_warn(tmp_path: Path) -> None:
    cfg = load_categraf(write(
        tmp_path,
        '[global]\nconcurrency = -1\nprecision = "ms"\nprint_configs = false\n'
        '[log]\nfile_name = "stdout"\nmax_size = 100\nmax_age = 1\nmax_backups = 1\nlocal_time = true\n'
        "compress = false\n",
        '[[instances]]\nurls = ["http://127.0.0.1:9100/metrics"]\nduplication_allowed = false\n',
    ), env={})
    assert cfg.warnings == []


def test_writer_max_retries_and_tls_server_name_are_kept_for_the_sender(tmp_path: Path) -> None:
    cfg = load_categraf(write(tmp_path, '[[writers]]\nurl = "https://127.0.0.1:9090/w"\nmax_retries = 3\n'
                                        'tls_server_name = "rw.example"\n'), env={})
    [w] = cfg.writers
    assert (w.max_retries, w.tls_server_name) == (3, "rw.example")
    assert WriterConfig(url="http://h:1/w").max_retries == -1  # retry forever, as Prometheus


def _file_handler(log: LogConfig) -> logging.handlers.RotatingFileHandler:
    handler = log_handler(log)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    return handler


def test_log_file_name_is_applied_with_rotation(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    handler = _file_handler(LogConfig(file_name=str(path), max_size=1, max_backups=2))
    logger = logging.getLogger("kubescrape.test_logfile")
    try:
        assert (handler.maxBytes, handler.backupCount) == (1 << 20, 2)
        logger.addHandler(handler)
        logger.propagate = False
        logger.warning("spool is %d%% full", 90)
        handler.flush()
        assert re.search(r"WARNING kubescrape.test_logfile: spool is 90% full$", path.read_text().strip())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    # lumberjack: max_size 0 means 100 MB, max_backups 0 keeps every file.
    handler = _file_handler(LogConfig(file_name=str(path), max_size=0, max_backups=0))
    handler.close()
    assert handler.maxBytes == 100 << 20 and handler.backupCount > 1000


def test_log_to_stdout_or_stderr_and_unwritable_file(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    for name, stream in (("stdout", out), ("stderr", err), ("", out)):
        handler = log_handler(LogConfig(file_name=name), stdout=out, stderr=err)
        assert isinstance(handler, logging.StreamHandler) and handler.stream is stream
    # Not configured: the command line's choice (stderr) stands.
    assert log_handler(LogConfig(), stdout=out, stderr=err) is None
    assert log_handler(load_categraf(write(tmp_path, "[log]\nmax_size = 5\n"), env={}).log) is None
    with pytest.raises(ConfigError, match="cannot open the log file") as info:
        log_handler(LogConfig(file_name=str(tmp_path / "missing" / "agent.log")))
    assert info.value.key == "log.file_name" and "missing" in (info.value.fix or "")


def _configmap_files(text: str) -> dict[str, str]:
    """The ``name.toml: |`` blocks of the Kubernetes ConfigMaps quoted in a seed document."""
    files: dict[str, str] = {}
    for m in re.finditer(r"(?m)^  (\S+\.toml): \|\n((?:    .*\n|\s*\n)+)", text):
        files[m.group(1)] = "\n".join(line[4:] for line in m.group(2).splitlines()) + "\n"
    return files


def test_seed_document_configs_load_unmodified(tmp_path: Path) -> None:
    # tests/conftest.py's SEEDS is right for the main checkout; a worktree sits one level deeper.
    candidates = [SEEDS, *(p / "shared" / "seeds" for p in Path(__file__).resolve().parents)]
    docs = [d / "categraf-kubelet-monitoring.zh.txt" for d in candidates]
    doc = next((d for d in docs if d.is_file()), None)
    if doc is None:
        pytest.skip("the seed documents (shared/seeds) are not present")
    files = _configmap_files(doc.read_text(encoding="utf-8"))
    assert set(files) >= {"config.toml", "prometheus.toml"}
    conf_dir = write(tmp_path, files["config.toml"], files["prometheus.toml"])
    cfg = load_categraf(conf_dir, env={"HOSTNAME": "n1"})
    assert cfg.warnings == []
    assert [w.url for w in cfg.writers] == ["http://10.206.0.16:19000/prometheus/v1/write"]
    assert [i.labels["job"] for i in cfg.instances] == ["kube-proxy", "kubelet", "cadvisor"]
    assert cfg.scrape_interval == 15.0
