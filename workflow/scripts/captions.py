"""Rules captions, captions_study: snakemake -> the captions stage (ssp.stages.STAGES) for one shard."""
import copy

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.stages import STAGES

raw = copy.deepcopy(snakemake.config)
if "q1" in snakemake.wildcards.keys():
    raw.setdefault("captions", {})["q1_variant"] = snakemake.wildcards.q1
# in this process, or in captions.python's interpreter (MiniCPM-o's transformers without conda)
STAGES["captions"].run(Config.from_dict(raw), snakemake.input.manifest, snakemake.wildcards.shard,
                       snakemake.output[0], snakemake.input.frames)
