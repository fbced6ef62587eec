# The run's summary: counts per stage and every skipped video with its reason.


rule summary:
    input:
        manifest=RUN / "manifest.csv",
        frames=shard_files("frames"),
        audio=shard_files("audio"),
        masks=shard_files("masks"),
        flow=shard_files("flow"),
        flow_mask=shard_files("flow_mask"),
        vggish=shard_files("vggish"),
        captions=shard_files("captions", "jsonl"),
    output:
        csv=report(RUN / "report" / "skipped.csv", category="Run", labels={"table": "skipped videos"}),
        md=RUN / "report" / "summary.md",
    params:
        notes=SUMMARY_NOTES,
    log:
        RUN / "logs" / "summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/summary.py"
