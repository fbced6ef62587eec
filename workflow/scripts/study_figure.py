"""Rule study_figure: a study's table (postmask_sweep, prompt_study) -> its plot (Fig. 5, Fig. 7)."""

from _job import start

start(snakemake)

from ssp.reporting.figures import study_figure

study_figure(snakemake.input[0], snakemake.wildcards.study, snakemake.output[0],
             chosen_weight=snakemake.params.chosen_weight, note=snakemake.params.note,
             chosen_premask_test=snakemake.params.chosen_premask_test)
