# The run's summary: counts per stage and every skipped video with its reason.


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
