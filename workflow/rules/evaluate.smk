# Scoring: metrics.json per variant, task and split, and the Table-2 style comparison.
# The tables need no torch: they run in the preprocessing environment.


rule evaluate:
    """A variant's metrics on a task and split, against the ground truth of the masks shards."""
    input:
        manifest=L.manifest,
        masks=shard_files("masks"),
        predictions=L.predictions("{variant}", "{split}"),
    output:
        L.metrics("{variant}", "{task}", "{split}"),
    log:
        L.log("evaluate", "{variant}_{task}_{split}"),
    wildcard_constraints:
        task="s4|ms3|avss",
        split="train|val|test",
    localrule: True  # a minute of CPU at most: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=job_settings("evaluate"),
    script:
        "../scripts/evaluate.py"


rule table:
    """Table 2 of the configured variants (table2), and each study's table: ours beside the
    published figures of studies.reference, when set."""
    input:
        metrics=lambda wc: [
            L.metrics(v, t, s)
            for v in STUDIES[wc.study]
            for t in eval_tasks()
            for s in ("val", "test")
        ],
        reference=REFERENCE,
    output:
        md=report(
            L.report("{study}.md"), category="Results", labels={"table": "{study}"}
        ),
        csv=L.report("{study}.csv"),
    log:
        L.log("{study}"),
    wildcard_constraints:
        study="|".join(STUDIES),
    localrule: True  # seconds of CPU: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        variants=lambda wc: STUDIES[wc.study],
        note=study_note,
    script:
        "../scripts/table.py"


rule study_figure:
    """A study's table as the paper plots it: Fig. 5 (post-mask weight), Fig. 7 (Q1 wording), and
    the pre-mask test study (each stand-in for M_GT at test)."""
    input:
        L.report("{study}.csv"),
    output:
        report(L.figure("{study}"), category="Figures", caption="../report/study.rst"),
    log:
        L.log("{study}_figure"),
    wildcard_constraints:
        study="postmask_sweep|prompt_study|premask_test_study",
    localrule: True  # seconds of CPU: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        chosen_weight=CFG.train.postmask_weight,
        chosen_premask_test=CFG.train.premask_test,
        note=study_note,
    script:
        "../scripts/study_figure.py"


rule table1:
    """Table 1: a column pair per setting (S4, MS3, AVSS), each from the run that trained for it."""
    input:
        metrics=table1_metrics,
        reference=REFERENCE,
    output:
        md=report(L.report("table1.md"), category="Results", labels={"table": "table1"}),
        csv=L.report("table1.csv"),
    log:
        L.log("table1"),
    localrule: True  # seconds of CPU: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        variants=list(CFG.train.variants),
    script:
        "../scripts/table1.py"


rule figures:
    input:
        unpack(figure_inputs),
    output:
        qualitative=report(
            L.figure("qualitative"),
            category="Figures",
            caption="../report/qualitative.rst",
        ),
        curves=report(
            L.figure("training_curves"),
            category="Figures",
            caption="../report/curves.rst",
        ),
    log:
        L.log("figures"),
    localrule: True  # seconds of CPU: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variant=FIGURE_VARIANT,
        split=lambda wc: figure_split(),
        videos=config["flow"]["figures"],
        premask_test=config["train"]["premask_test"],
    script:
        "../scripts/figures.py"
