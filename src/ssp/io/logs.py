"""Logging set-up shared by the CLI and the Snakemake rule scripts."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# a progress bar's update interval, in seconds, where stderr is a file or a pipe (a job's log,
# SLURM's output): one update a minute there, not ten a second (TQDM_MININTERVAL set by the user wins)
BAR_INTERVAL_OFF_TERMINAL = "60"


def setup(log_file: str | Path | None = None, level: int = logging.INFO, *, append: bool = False) -> None:
    """Log to stderr, and to ``log_file`` too when given (a rule's `log:`; started afresh unless
    ``append``). Off a terminal, progress bars update once a minute (``BAR_INTERVAL_OFF_TERMINAL``)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", BAR_INTERVAL_OFF_TERMINAL)
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
