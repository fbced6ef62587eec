# Scoring: metrics.json per variant, task and split, and the Table-2 style comparison.


rule evaluate:
    input:
        manifest=RUN / "manifest.csv",
        predictions=RUN / "predictions" / "{variant}" / "{split}.h5",
    output:
        RUN / "metrics" / "{variant}" / "{task}_{split}.json",
    wildcard_constraints:
        task="s4|ms3|avss",
        split="train|val|test",
    params:
        root=DATA,
    log:
        RUN / "logs" / "evaluate" / "{variant}_{task}_{split}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/evaluate.py"


rule table:
    """Table 2 of the configured variants (table2), and each study's table: ours beside the
    published figures of studies.reference, when set."""
    input:
        metrics=lambda wc: [RUN / "metrics" / v / f"{t}_{s}.json" for v in STUDIES[wc.study]
                            for t in eval_tasks() for s in ("val", "test")],
        reference=REFERENCE,
    output:
        md=report(RUN / "report" / "{study}.md", category="Results", labels={"table": "{study}"}),
        csv=RUN / "report" / "{study}.csv",
    wildcard_constraints:
        study="|".join(STUDIES),
    params:
        variants=lambda wc: STUDIES[wc.study],
        note=study_note,
    log:
        RUN / "logs" / "{study}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table.py"


rule study_figure:
    """A study's table as the paper plots it: Fig. 5 (post-mask weight), Fig. 7 (Q1 wording)."""
    input:
        RUN / "report" / "{study}.csv",
    output:
        report(RUN / "figures" / "{study}.png", category="Figures", caption="../report/study.rst"),
    wildcard_constraints:
        study="postmask_sweep|prompt_study",
    params:
        chosen_weight=CFG.train.postmask_weight,
        note=study_note,
    log:
        RUN / "logs" / "{study}_figure.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/study_figure.py"


rule table1:
    """Table 1: a column pair per setting (S4, MS3, AVSS), each from the run that trained for it."""
    input:
        metrics=table1_metrics,
        reference=REFERENCE,
    output:
        md=report(RUN / "report" / "table1.md", category="Results", labels={"table": "table1"}),
        csv=RUN / "report" / "table1.csv",
    params:
        variants=list(CFG.train.variants),
    log:
        RUN / "logs" / "table1.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table1.py"


rule figures:
    input:
        unpack(figure_inputs),
    output:
        qualitative=report(RUN / "figures" / "qualitative.png", category="Figures",
                           caption="../report/qualitative.rst"),
        curves=report(RUN / "figures" / "training_curves.png", category="Figures",
                      caption="../report/curves.rst"),
    params:
        variant=FIGURE_VARIANT,
        split=lambda wc: figure_split(),
        videos=config["flow"]["figures"],
        premask_test=config["train"]["premask_test"],
    log:
        RUN / "logs" / "figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/figures.py"
