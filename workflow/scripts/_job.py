"""What every rule script starts with: ``start(snakemake)`` puts the package's ``src/`` on the
path (a conda environment carries the dependencies, not the package) and sends the job's logging
to its log file (``ssp.io.logs``). Snakemake puts this folder on each script's path."""
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def start(snakemake) -> None:
    if SRC not in sys.path:
        sys.path.insert(0, SRC)
    from ssp.io import logs

    logs.setup(snakemake.log[0])
