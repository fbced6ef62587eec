# VGGish audio features: one 128-d embedding per second, padded to T by the subset's rule.


rule vggish:
    input:
        manifest=RUN / "manifest.csv",
        audio=RUN / "audio" / "{shard}.h5",
    output:
        RUN / "vggish" / "{shard}.h5",
    params:
        vggish=config["vggish"],
    log:
        RUN / "logs" / "vggish" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "vggish" / "{shard}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/vggish.py"
