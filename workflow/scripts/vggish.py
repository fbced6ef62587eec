"""Rule vggish: snakemake -> the vggish stage (ssp.stages.STAGES) for one shard."""

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.stages import STAGES

STAGES["vggish"].run(
    Config.from_dict(snakemake.config), snakemake.input.manifest, snakemake.wildcards.shard,
    snakemake.output[0], snakemake.input.audio)
