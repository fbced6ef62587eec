"""Logging set-up shared by the CLI and the Snakemake rule scripts."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(log_file: str | Path | None = None, level: int = logging.INFO, *, append: bool = False) -> None:
    """Log to stderr, and to ``log_file`` too when given (a rule's `log:`; started afresh unless ``append``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a" if append else "w"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)


def log_file() -> Path | None:
    """The file ``setup`` logs to, if any (a stage that runs part of its work in another interpreter
    sends that side's messages there too)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            return Path(h.baseFilename)
    return None


@functools.lru_cache(maxsize=None)
def warn_once(logger: str, message: str) -> None:
    """A warning said once per process (the same logger and message again say nothing)."""
    logging.getLogger(logger).warning("%s", message)
