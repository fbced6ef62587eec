"""Rule figures: snakemake -> ssp.reporting.figures (qualitative sheet, training curves)."""
from pathlib import Path

from _job import start

start(snakemake)

from ssp.datasets.manifest import read_manifest
from ssp.io.store import ShardedStore, ShardReader
from ssp.layout import stage_dirs
from ssp.reporting.figures import qualitative, training_curves

inp, par = snakemake.input, snakemake.params
manifest = read_manifest(inp.manifest)
test = manifest[manifest["split"] == par.split]   # test, or the split of a folder of videos
dirs = stage_dirs({s: [inp[s]] for s in ("frames", "flow", "flow_mask", "masks")})   # the declared shards' folders
stores = {s: ShardedStore.from_manifest(folder, manifest) for s, folder in dirs.items()}
preds = ShardReader(inp.predictions)
stage1 = ShardReader(inp.stage1[0]) if inp.stage1 else None
videos = [v for v in test["video_id"] if v in preds][: par.videos]
qualitative(videos, frames=stores["frames"], flows=stores["flow"], flow_masks=stores["flow_mask"],
            masks=stores["masks"], predictions=preds, stage1=stage1, premask_test=par.premask_test,
            out=snakemake.output.qualitative)
training_curves({Path(p).parent.name: p for p in inp.metrics}, snakemake.output.curves)
