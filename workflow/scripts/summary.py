"""Rule summary: snakemake -> ssp.reporting.summary.write_summary."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.datasets.manifest import read_manifest, read_refused  # noqa: E402
from ssp.io import logs  # noqa: E402
from ssp.reporting.summary import write_summary  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
write_summary({s: inp[s] for s in snakemake.params.stages},  # noqa: F821  (ssp.stages.STAGES)
              len(read_manifest(inp.manifest)), snakemake.output.csv, snakemake.output.md,  # noqa: F821
              notes=snakemake.params.notes, refused=read_refused(inp.manifest))  # noqa: F821
