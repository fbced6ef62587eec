# The dataset layout -> one manifest table (video id, subset, split, T, paths, labels, shard).


checkpoint manifest:
    input:
        dataset_inputs,
    output:
        manifest=RUN / "manifest.csv",
    params:
        dataset=config["dataset"],
        shards=config["shards"],
    log:
        RUN / "logs" / "manifest.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/manifest.py"
