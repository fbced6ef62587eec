"""Rule train: snakemake -> ssp.train.train (or torchrun with several GPUs)."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.config import Config  # noqa: E402
from ssp.train_job import run_training  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
run_training(Config.from_dict(snakemake.config), snakemake.wildcards.variant,  # noqa: F821
             Path(snakemake.output.model).parent, captions_files=snakemake.input.captions)  # noqa: F821
