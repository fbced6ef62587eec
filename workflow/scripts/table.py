"""Rule table: metrics.json files -> the Table-2 style comparison (markdown + CSV)."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.tables import ablation_table  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
ablation_table(snakemake.input, snakemake.params.variants, snakemake.output.md, snakemake.output.csv)  # noqa: F821
