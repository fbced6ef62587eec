"""Rule synth: snakemake -> ssp.datasets.synthavs.generate."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.datasets.synthavs import generate  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
cfg = Config.from_dict(snakemake.config, models=False)  # noqa: F821
s = cfg.synthetic
generate(Path(snakemake.output.metadata).parent, seed=s.seed,  # noqa: F821
         videos={"v1s": s.videos.v1s, "v1m": s.videos.v1m, "v2": s.videos.v2},
         train=s.split_fractions.train, val=s.split_fractions.val, image_size=s.image_size,
         classes=s.classes, max_objects=s.max_objects)
