"""``[log] file_name`` and ``[global] print_configs`` as ``kubescrape run`` applies them: the agent's log goes
to the configured file, the configuration is printed there with its secrets redacted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.e2e.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-writer-pass"


async def test_run_logs_to_the_configured_file_with_secrets_redacted(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "agent.log"
    log_file.parent.mkdir()
    conf = tmp_path / "conf"
    (conf / "input.prometheus").mkdir(parents=True)
    (conf / "config.toml").write_text(
        "[global]\nhostname = \"node-1\"\ninterval = 1\nprint_configs = true\n"
        f"[log]\nfile_name = \"{log_file}\"\n"
        f"[[writers]]\nurl = \"http://127.0.0.1:{free_port()}/api/v1/write\"\n"
        f"basic_auth_user = \"writer\"\nbasic_auth_pass = \"{PASSWORD}\"\n"
    )
    (conf / "input.prometheus" / "prometheus.toml").write_text(
        f"[[instances]]\nurls = [\"http://127.0.0.1:{free_port()}/metrics\"]\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubescrape", "run", "--config-dir", str(conf), "--listen", "",
        "--spool-dir", str(tmp_path / "spool"), "--shutdown-timeout", "1", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        text = ""
        for _ in range(200):  # at most 20 s
            text = log_file.read_text() if log_file.exists() else ""
            if "scraping 1 target" in text and "scrape of" in text:
                break
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    text = log_file.read_text()
    assert "scraping 1 target" in text
    assert "configuration: {" in text
    assert "basic_auth_pass" in text and "<secret>" in text
    assert PASSWORD not in text
    assert PASSWORD not in stderr.decode()
    # The log went to the file, not to stderr as well.
    assert "scraping 1 target" not in stderr.decode()
