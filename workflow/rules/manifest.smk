# The dataset layout -> one manifest table (video id, subset, split, T, paths, labels, shard).


checkpoint manifest:
    input:
        dataset_inputs,
    output:
        manifest=L.manifest,
        refused=L.manifest_refused,
    log:
        L.log("manifest"),
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=job_settings("manifest"),
        listing=video_listing,
    script:
        "../scripts/manifest.py"
