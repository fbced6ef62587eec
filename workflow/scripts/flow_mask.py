"""Rule flow_mask: snakemake -> the flow_mask stage (Eq. 1, M_O) for one shard."""

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.stages import STAGES

STAGES["flow_mask"].run(
    Config.from_dict(snakemake.config, models=False), snakemake.input.manifest, snakemake.wildcards.shard,
    snakemake.output[0], snakemake.input.flow)
