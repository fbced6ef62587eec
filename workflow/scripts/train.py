"""Rule train: snakemake -> ssp.engine.jobs.run_training (torchrun with several GPUs), reading the declared shards."""
from pathlib import Path

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.engine.jobs import run_training

inp = snakemake.input
declared = {"manifest": inp.manifest, **{s: list(inp[s]) for s in ("frames", "masks", "flow_mask", "vggish")}}
run_training(Config.from_dict(snakemake.config), snakemake.wildcards.variant,
             Path(snakemake.output.model).parent, captions_files=inp.captions, inputs=declared,
             stage1_val=inp.stage1_val[0] if inp.stage1_val else None)
