"""Rule study_figure: a study's table (postmask_sweep, prompt_study) -> its plot (Fig. 5, Fig. 7)."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.io import logs  # noqa: E402
from ssp.reporting.figures import study_figure  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
study_figure(snakemake.input[0], snakemake.wildcards.study, snakemake.output[0],  # noqa: F821
             chosen_weight=snakemake.params.chosen_weight, note=snakemake.params.note,  # noqa: F821
             chosen_premask_test=snakemake.params.chosen_premask_test)  # noqa: F821
