"""Rule table1: this run's and studies.table1_runs' test metrics -> a Table-1 style comparison."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.io import logs  # noqa: E402
from ssp.reporting.tables import settings_table  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
settings_table(snakemake.input.metrics, snakemake.params.variants, snakemake.output.md,  # noqa: F821
               snakemake.output.csv, reference=next(iter(snakemake.input.reference), None))  # noqa: F821
