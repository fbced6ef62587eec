"""Rule evaluate: snakemake -> ssp.evaluation.scoring.evaluate for one variant, task and split."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.evaluation.scoring import evaluate, write  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
wc = snakemake.wildcards  # noqa: F821
write(evaluate(wc.task, snakemake.params.root, snakemake.input.predictions, wc.split,  # noqa: F821
               fscore=snakemake.params.evaluate["fscore"]), snakemake.output[0])  # noqa: F821
