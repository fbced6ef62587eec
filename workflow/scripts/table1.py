"""Rule table1: this run's and studies.table1_runs' test metrics -> a Table-1 style comparison."""

from _job import start

start(snakemake)

from ssp.reporting.tables import settings_table

settings_table(snakemake.input.metrics, snakemake.params.variants, snakemake.output.md,
               snakemake.output.csv, reference=next(iter(snakemake.input.reference), None))
