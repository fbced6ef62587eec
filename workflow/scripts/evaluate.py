"""Rule evaluate: snakemake -> ssp.evaluation.scoring.evaluate_shards for one variant, task and split."""

from _job import start

start(snakemake)

from ssp.evaluation.scoring import evaluate_shards, write

wc = snakemake.wildcards
write(evaluate_shards(wc.task, snakemake.input.manifest, snakemake.input.masks,
                      snakemake.input.predictions, wc.split,
                      fscore=snakemake.params.settings["evaluate.fscore"]), snakemake.output[0])
