"""Rule predict: snakemake -> ssp.predict.predict for one variant and split."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.config import Config  # noqa: E402
from ssp.predict import write_pngs  # noqa: E402
from ssp.train_job import run_prediction  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
run_prediction(Config.from_dict(snakemake.config), snakemake.wildcards.variant,  # noqa: F821
               snakemake.wildcards.split, inp.model, snakemake.output.h5,  # noqa: F821
               captions_files=inp.captions, stage1=inp.stage1[0] if inp.stage1 else None)
write_pngs(snakemake.output.h5, snakemake.output.png)  # noqa: F821
