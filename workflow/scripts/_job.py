"""What every rule script starts with: ``start(snakemake)`` puts the workflow's ``src/`` first on
the path (a conda environment carries the dependencies, not the package; this module itself may be
read from Snakemake's source cache, so the workflow is found from the rule's ``scriptdir``), sends
the job's logging to its log file (``ssp.io.logs``), and logs an error that ends the job there too,
with its traceback, where Snakemake's message sends the reader. Snakemake puts this folder on each
script's path."""
import logging
import sys
from pathlib import Path


def _logged(kind, error, traceback) -> None:
    logging.getLogger("ssp").critical("the job failed: %s: %s", kind.__name__, error,
                                      exc_info=(kind, error, traceback))


def start(snakemake) -> None:
    src = str(Path(snakemake.scriptdir).resolve().parents[1] / "src")
    if src in sys.path:
        sys.path.remove(src)
    sys.path.insert(0, src)
    from ssp.io import logs

    logs.setup(snakemake.log[0])
    sys.excepthook = _logged
