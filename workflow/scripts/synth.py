"""Rule synth: snakemake -> ssp.datasets.synthavs.generate."""
from pathlib import Path

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.datasets.synthavs import generate

cfg = Config.from_dict(snakemake.config, models=False)
s = cfg.synthetic
generate(Path(snakemake.output.metadata).parent, seed=s.seed,
         videos={"v1s": s.videos.v1s, "v1m": s.videos.v1m, "v2": s.videos.v2},
         train=s.split_fractions.train, val=s.split_fractions.val, image_size=s.image_size,
         classes=s.classes, max_objects=s.max_objects)
