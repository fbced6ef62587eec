"""Rule summary: snakemake -> ssp.reporting.summary.write_summary."""

from _job import start

start(snakemake)

from ssp.datasets.manifest import read_manifest, read_refused
from ssp.reporting.summary import write_summary

inp = snakemake.input
write_summary({s: inp[s] for s in snakemake.params.stages},
              len(read_manifest(inp.manifest)), snakemake.output.csv, snakemake.output.md,
              notes=snakemake.params.notes, refused=read_refused(inp.manifest))
