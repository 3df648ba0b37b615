"""``[log] file_name`` applied: the logging handler the agent writes its log through.

Categraf logs to ``stdout`` by default and rotates a log file with lumberjack (``max_size`` MB,
``max_backups`` old files). The same with the standard library: a :class:`~logging.StreamHandler` or a
:class:`~logging.handlers.RotatingFileHandler`. A file that cannot be opened is a
:class:`~kubescrape.errors.ConfigError` at start-up, not a traceback on the first log line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

from kubescrape.config.models import LogConfig
from kubescrape.errors import ConfigError

__all__ = ["LOG_FORMAT", "log_handler"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_DEFAULT_MAX_SIZE_MB = 100  # lumberjack's default when max_size is 0


def log_handler(
    log: LogConfig, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> logging.Handler | None:
    """The handler for ``log.file_name``: ``stdout``, ``stderr`` or a rotating file (its directory missing
    or not writable → ConfigError). ``stdout``/``stderr`` replace the process streams (tests).

    None when the configuration does not set ``file_name``: the log stays where the command line put it
    (stderr), so that ``--test``, which writes samples to stdout, and existing deployments keep their
    output apart. The handler carries :data:`LOG_FORMAT`; the caller sets levels and attaches it.
    """
    if "file_name" not in log.model_fields_set:
        return None
    handler: logging.Handler
    if log.file_name == "stdout":
        handler = logging.StreamHandler(stdout or sys.stdout)
    elif log.file_name == "stderr":
        handler = logging.StreamHandler(stderr or sys.stderr)
    else:
        # Imported only for a log file: the run path has no other use for logging.handlers.
        from logging.handlers import RotatingFileHandler

        path = Path(log.file_name)
        max_bytes = (log.max_size or _DEFAULT_MAX_SIZE_MB) << 20
        # lumberjack keeps every old file when max_backups is 0; RotatingFileHandler would keep none.
        backups = log.max_backups if log.max_backups > 0 else 1 << 16
        try:
            handler = RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot open the log file {path}: {exc.strerror or exc}",
                f"create {path.parent} and make it writable for the agent, or set [log] file_name = "
                "\"stdout\"",
                key="log.file_name",
            ) from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler
