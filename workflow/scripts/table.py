"""Rule table: metrics.json files (+ published figures) -> a Table-2 style comparison."""
import logging

from _job import start

start(snakemake)

from ssp.reporting.tables import ablation_table

if snakemake.params.note:
    logging.getLogger("ssp").warning("%s", snakemake.params.note)
ablation_table(snakemake.input.metrics, snakemake.params.variants, snakemake.output.md,
               snakemake.output.csv, reference=next(iter(snakemake.input.reference), None),
               note=snakemake.params.note)
