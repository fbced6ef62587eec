# SSP (Stepping Stone Plus): offline preprocessing + training DAG.
# Thin entry point: config, validation (in workflow/rules/common.smk), rule files, targets.
from snakemake.utils import min_version

min_version("9.0")


# the demo's config, when no --configfile names the run's (common.smk reads those, with the
# files each extends, as check-config does)
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"


if CFG.dataset.layout == "synthetic":

    include: "workflow/rules/synth.smk"


include: "workflow/rules/manifest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/vggish.smk"
include: "workflow/rules/captions.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets,


# the manifest alone (the dataset's listing, minutes at most): after it, `snakemake -n` shows every
# job of the run, per shard, which it cannot before the manifest exists
rule plan:
    input:
        L.manifest,


rule ablations:
    input:
        L.report("ablations.md"),


rule postmask_sweep:
    input:
        L.report("postmask_sweep.md"),
        L.figure("postmask_sweep"),


rule prompt_study:
    input:
        L.report("prompt_study.md"),
        L.figure("prompt_study"),


rule premask_test_study:
    input:
        L.report("premask_test_study.md"),
        L.figure("premask_test_study"),
