"""The options of ``kubescrape run``, declared once.

Two readers: :mod:`kubescrape.cli` builds the typer command (help, validation, error messages) from
:data:`RUN_OPTIONS`, and ``python -m kubescrape`` / the ``kubescrape`` script (:mod:`kubescrape.__main__`)
parses an ordinary ``run`` command line with :func:`parse_run_args` without importing typer and click at
all: building the typer app and parsing with it cost 0.10 s CPU on the 2-core bench machine (0.05 s import,
0.05 s app and parse), a fifth of the agent's start-up budget. The fast parser accepts only what it is sure
of (known options, values that convert, bounds that hold) and otherwise returns None, so ``--help``, typos
and bad values are always handled, and reported, by typer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import GenericAlias
from typing import Any, NamedTuple

__all__ = ["RUN_OPTIONS", "RunOption", "parse_run_args", "run_kwargs"]


class RunOption(NamedTuple):
    """One option: ``param`` is its Python name (a keyword of :func:`kubescrape.agent.run_command` after
    :func:`run_kwargs`), ``flags`` its spellings. A ``bool`` option is a flag; with ``negative`` it is an
    on/off pair (``--spool/--no-spool``). (A NamedTuple: a frozen dataclass costs ~2 ms more to define.)"""

    param: str
    flags: tuple[str, ...]
    type: type
    default: Any
    help: str
    metavar: str | None = None
    optional: bool = False  # None is allowed (and the default)
    multiple: bool = False  # repeatable: a list, None when not given
    negative: str | None = None
    min: int | None = None

    @property
    def annotation(self) -> Any:
        """The parameter's type as typer reads it."""
        if self.multiple:
            return GenericAlias(list, (self.type,)) | None
        if self.optional:
            return self.type | None
        return self.type


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("config_dir", ("--config-dir", "-c"), Path, Path("conf"), metavar="DIR",
              help="Categraf-layout config directory: config.toml and input.prometheus/*.toml."),
    RunOption("writer_url", ("--writer-url",), str, None, metavar="URL", multiple=True,
              help="Remote-write URL; repeat for several backends. Replaces the [[writers]] of config.toml."),
    RunOption("test", ("--test",), bool, False,
              help="Scrape every target once, print the samples, write nothing; exit 1 if a target failed."),
    RunOption("listen", ("--listen",), str, "127.0.0.1:9101", metavar="HOST:PORT",
              help="Address of the agent's own /metrics and /healthz; '' turns it off."),
    RunOption("spool_dir", ("--spool-dir",), Path, Path("spool"), metavar="DIR",
              help="Directory of the durable on-disk spool."),
    RunOption("spool_max_bytes", ("--spool-max-bytes",), int, 1 << 30, metavar="BYTES",
              help="Spool size limit per writer; beyond it the oldest data is evicted (and counted)."),
    RunOption("spool", ("--spool",), bool, True, negative="--no-spool",
              help="Keep unsent samples in the durable spool (--no-spool: in memory only, lost on exit)."),
    RunOption("shutdown_timeout", ("--shutdown-timeout",), float, 10.0, metavar="SECONDS",
              help="On SIGTERM, flush for this long, then leave the rest in the spool."),
    RunOption("log_level", ("--log-level",), str, "info", metavar="LEVEL",
              help="debug, info, warning or error."),
    RunOption("config_file", ("--config",), Path, None, metavar="FILE", optional=True,
              help="Prometheus configuration file (prometheus.yml), read instead of --config-dir."),
    RunOption("strict", ("--strict",), bool, False,
              help="With --config: an option kubescrape lacks is an error."),
    RunOption("quiet", ("--quiet",), bool, False,
              help="No periodic summary line in the log (warnings and errors still are)."),
    RunOption("summary_interval", ("--summary-interval",), float, 60.0, metavar="SECONDS",
              help="Log a one-line summary (targets up, samples sent, pending) this often; 0 = never."),
    RunOption("shard_count", ("--shard-count",), int, 1, metavar="M", min=1,
              help="Agents sharing the targets; each keeps the targets whose label-set hash falls to it."),
    RunOption("shard_index", ("--shard-index",), str, None, metavar="N|POD", optional=True,
              help="This agent's shard, 0..M-1, or a StatefulSet pod name (kubescrape-2); default: the "
              "ordinal of $POD_NAME or $HOSTNAME."),
    RunOption("shard_replication", ("--shard-replication",), int, 1, metavar="R", min=1,
              help="Scrape every target by R of the M shards (replication factor)."),
)


def run_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`kubescrape.agent.run_command` for parsed option ``values``."""
    kwargs = dict(values)
    kwargs["writer_urls"] = kwargs.pop("writer_url") or []
    return kwargs


def parse_run_args(args: Sequence[str]) -> dict[str, Any] | None:
    """The option values of ``kubescrape run ARGS`` (every option, defaults filled in), or None when ``args``
    hold anything but well-formed known options: help, an unknown option, a positional argument, a value
    that does not convert or is out of bounds. Then typer parses, and reports, instead."""
    by_flag: dict[str, tuple[RunOption, bool]] = {}
    for option in RUN_OPTIONS:
        for flag in option.flags:
            by_flag[flag] = (option, True)
        if option.negative:
            by_flag[option.negative] = (option, False)
    values: dict[str, Any] = {o.param: o.default for o in RUN_OPTIONS}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        flag, eq, inline = token.partition("=")
        if not flag.startswith("--"):
            flag, eq, inline = token, "", ""  # short options only as a separate token: -c DIR
        entry = by_flag.get(flag)
        if entry is None:
            return None
        option, on = entry
        if option.type is bool:
            if eq:
                return None
            values[option.param] = on
            continue
        if eq:
            text = inline
        elif i < len(args) and not args[i].startswith("--"):
            text = args[i]
            i += 1
        else:
            return None
        try:
            value = option.type(text)
        except ValueError:
            return None
        if option.min is not None and value < option.min:
            return None
        if option.multiple:
            values[option.param] = [*(values[option.param] or []), value]
        else:
            values[option.param] = value
    return values
