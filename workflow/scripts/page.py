"""Rule page: snakemake -> ssp.reporting.page.build_page (the results page of the run's test split,
or of a folder of videos)."""
from _job import start

start(snakemake)

from ssp.datasets.manifest import read_manifest
from ssp.io.captions import read_captions
from ssp.io.store import ShardedStore
from ssp.layout import stage_dirs
from ssp.reporting.page import build_page

inp, par = snakemake.input, snakemake.params
manifest = read_manifest(inp.manifest)
rows = manifest[manifest["split"] == par.split]
stages = [s for s in ("frames", "audio", "flow_mask", "masks") if s in inp.keys()]
dirs = stage_dirs({s: list(inp[s]) for s in stages})
stores = {s: ShardedStore.from_manifest(folder, manifest) for s, folder in dirs.items()}
captions = {}
for path in inp.captions:
    captions.update(read_captions(path))
compare = tuple(par.compare)
build_page(snakemake.output[0], rows=rows, frames=stores["frames"], audio=stores["audio"], masks=stores.get("masks"),
           flow_masks=stores["flow_mask"], captions=captions, predictions=dict(zip(par.variants, inp.predictions)),
           stage1=inp.stage1[0] if inp.stage1 else None, premask_test=par.premask_test,
           premask_variants=par.premask_variants, compare=compare, binary=par.binary,
           fscore=par.fscore, overlay_variant=compare[0] if compare[0] in par.variants
           else par.variants[-1], title=f"{par.title}, {par.split} split", audio_format=par.audio, progress=True)
