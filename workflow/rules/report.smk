# The run's summary (counts per stage and every skipped video with its reason) and the results page.


rule summary:
    input:
        unpack(stage_shards),
        manifest=L.manifest,
    output:
        csv=report(L.skipped_csv, category="Run", labels={"table": "skipped videos"}),
        md=L.summary_md,
    log:
        L.log("summary"),
    localrule: True  # seconds of CPU: on the node that runs Snakemake, not one sbatch each
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        notes=SUMMARY_NOTES,
        stages=list(STAGES),
    script:
        "../scripts/summary.py"


rule page:
    input:
        unpack(page_inputs),
    output:
        report(
            directory(L.page),
            htmlindex="index.html",
            category="Results page",
            caption="../report/page.rst",
        ),
    log:
        L.log("page"),
    benchmark:
        L.benchmark("page")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        settings=job_settings("page"),
        split=lambda wc: figure_split(),
        variants=list(CFG.train.variants),
        premask_variants=page_premask_variants(),
        premask_test=CFG.train.premask_test,
        binary=CFG.train.task == "binary",
        compare=list(CFG.page.compare),
        audio=CFG.page.audio,
        fscore=CFG.evaluate.fscore,
        title=f"{CFG.dataset.name}",
    script:
        "../scripts/page.py"
