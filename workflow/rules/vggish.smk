# VGGish audio features: one 128-d embedding per second, padded to T by the subset's rule.


rule vggish:
    input:
        fetched=fetched,  # models named by hub id: fetched (common.smk)
        manifest=L.manifest,
        audio=L.shard("audio", "{shard}"),
    output:
        L.shard("vggish", "{shard}"),
    log:
        L.log("vggish", "{shard}"),
    benchmark:
        L.benchmark("vggish", "{shard}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
        cpus_per_gpu=4,
    params:
        settings=job_settings("vggish"),
    script:
        "../scripts/vggish.py"
