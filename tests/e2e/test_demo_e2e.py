"""The README's main job: ``kubescrape demo`` end to end (emulator + agent + a real Prometheus receiver)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from kubescrape.demo import run_demo


async def test_demo_scrapes_every_target_and_shows_403_then_200(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    rc = await run_demo(duration=7, pods=3, nodes=1, state_dir=tmp_path, console=console)
    text = out.getvalue()
    assert rc == 0, text
    # the denied request: the unbound ServiceAccount gets the kubelet's exact 403 body
    assert "403" in text
    assert ("Forbidden (user=system:serviceaccount:default:unbound, verb=get, resource=nodes, "
            "subresource=metrics)") in text
    # and the bound one succeeds
    assert "200" in text
    assert "targets up 3/3" in text
    assert "done: 3/3 targets up" in text
    # the seed's configuration, pointed at the emulator, verifying the kubelet's certificate
    inputs = (tmp_path / "conf" / "input.prometheus" / "prometheus.toml").read_text()
    assert "insecure_skip_verify" not in inputs
    assert 'tls_ca = "' in inputs
    assert 'labels = { job="cadvisor" }' in inputs


async def test_demo_with_the_embedded_receiver(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    rc = await run_demo(duration=6, pods=2, nodes=2, state_dir=tmp_path, console=console,
                        receiver_kind="embedded")
    text = out.getvalue()
    assert rc == 0, text
    assert "receiver: embedded receiver" in text
    # two nodes on their own loopback addresses, three jobs each
    assert "done: 6/6 targets up" in text
    inputs = (tmp_path / "conf" / "input.prometheus" / "prometheus.toml").read_text()
    assert "https://127.0.1.1:" in inputs and "https://127.0.1.2:" in inputs
