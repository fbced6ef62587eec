# Frames (1 fps), audio (16 kHz mono) and ground-truth masks, one HDF5 shard per job.


rule preprocess:
    input:
        manifest=L.manifest,
    output:
        L.shard("{stage}", "{shard}"),
    log:
        L.log("{stage}", "{shard}"),
    benchmark:
        L.benchmark("{stage}", "{shard}")
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=lambda wc: job_settings(wc.stage),
    script:
        "../scripts/preprocess.py"
