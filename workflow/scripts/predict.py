"""Rule predict: snakemake -> ssp.engine.jobs.run_prediction for one variant and split, reading the declared shards."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.engine.inference import write_pngs  # noqa: E402
from ssp.engine.jobs import run_prediction  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
declared = {"manifest": inp.manifest, **{s: list(inp[s]) for s in ("frames", "masks", "flow_mask", "vggish")}}
run_prediction(Config.from_dict(snakemake.config), snakemake.wildcards.variant,  # noqa: F821
               snakemake.wildcards.split, inp.model, snakemake.output.h5,  # noqa: F821
               captions_files=inp.captions, stage1=inp.stage1[0] if inp.stage1 else None, inputs=declared)
write_pngs(snakemake.output.h5, snakemake.output.png)  # noqa: F821
