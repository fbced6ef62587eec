"""Rule predict: snakemake -> ssp.engine.jobs.run_prediction for one variant and split, reading the declared shards."""

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.engine.inference import write_pngs
from ssp.engine.jobs import run_prediction

inp = snakemake.input
declared = {"manifest": inp.manifest, **{s: list(inp[s]) for s in ("frames", "masks", "flow_mask", "vggish")}}
run_prediction(Config.from_dict(snakemake.config), snakemake.wildcards.variant,
               snakemake.wildcards.split, inp.model, snakemake.output.h5,
               captions_files=inp.captions, stage1=inp.stage1[0] if inp.stage1 else None, inputs=declared)
write_pngs(snakemake.output.h5, snakemake.output.png)
