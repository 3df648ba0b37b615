"""How ``kubescrape doctor`` shows its results: readable text (rich) or JSON. The checks are in
:mod:`kubescrape.doctor`; nothing here decides anything."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubescrape.doctor import Diagnosis

__all__ = ["render_json", "render_text"]


def render_json(results: Sequence[Diagnosis]) -> str:
    """The ``--json`` output: a list with one object per target (see :meth:`Diagnosis.to_dict`)."""
    return json.dumps([r.to_dict() for r in results], indent=2)


def render_text(results: Sequence[Diagnosis], console: Any) -> None:
    """Print the results readably on a rich ``Console``: ✓/✗ per step, then cause, fix and YAML."""
    from rich.markup import escape
    from rich.syntax import Syntax

    for r in results:
        mark = "[green]OK[/]" if r.ok else "[red]FAILED[/]"
        console.print(f"[bold]{escape(r.url)}[/]  {mark}")
        for s in r.steps:
            sign = "[green]✓[/]" if s.ok else "[red]✗[/]"
            console.print(f"  {sign} {s.name:<12} {escape(s.detail)}")
            if s.warning:
                console.print(f"    [yellow]! {escape(s.warning)}[/]")
        if r.finding is not None:
            console.print(f"  [bold red]Cause:[/] {escape(r.finding.cause)}")
            console.print(f"  [bold green]Fix:[/] {escape(r.finding.fix)}")
            if r.finding.yaml:
                console.print(Syntax(r.finding.yaml.rstrip("\n"), "yaml", background_color="default"))
        if r.stats is not None:
            stats = r.stats
            console.print(f"  {stats.series} series, {stats.bytes} bytes, {stats.seconds * 1000:.0f} ms")
        console.print()
    failed = sum(not r.ok for r in results)
    summary = f"{len(results) - failed} of {len(results)} target(s) OK"
    console.print(f"[bold]{summary}[/]" if not failed else f"[bold red]{summary}[/]")
