"""Rule preprocess: snakemake -> the frames, audio or masks stage (ssp.stages.STAGES) for one shard."""

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.stages import STAGES

STAGES[snakemake.wildcards.stage].run(
    Config.from_dict(snakemake.config, models=False), snakemake.input.manifest, snakemake.wildcards.shard,
    snakemake.output[0], None)
