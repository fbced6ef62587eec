"""Rule train: snakemake -> ssp.engine.jobs.run_training (torchrun with several GPUs), reading the declared shards."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.engine.jobs import run_training  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
declared = {"manifest": inp.manifest, **{s: list(inp[s]) for s in ("frames", "masks", "flow_mask", "vggish")}}
run_training(Config.from_dict(snakemake.config), snakemake.wildcards.variant,  # noqa: F821
             Path(snakemake.output.model).parent, captions_files=inp.captions, inputs=declared,  # noqa: F821
             stage1_val=inp.stage1_val[0] if inp.stage1_val else None)
