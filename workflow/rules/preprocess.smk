# Frames (1 fps), audio (16 kHz mono) and ground-truth masks, one HDF5 shard per job.


rule preprocess:
    input:
        manifest=RUN / "manifest.csv",
    output:
        RUN / "{stage}" / "{shard}.h5",
    params:
        preprocess=config["preprocess"],
    log:
        RUN / "logs" / "{stage}" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "{stage}" / "{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/preprocess.py"
