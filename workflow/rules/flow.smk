# Optical flow (Perceiver IO / DIS / Farneback), Eq. 1 smoothing and the flow mask M_O.


rule flow:
    input:
        fetched=fetched,  # models named by hub id: fetched (common.smk)
        manifest=L.manifest,
        frames=L.shard("frames", "{shard}"),
    output:
        L.shard("flow", "{shard}"),
    log:
        L.log("flow", "{shard}"),
    benchmark:
        L.benchmark("flow", "{shard}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU if CFG.flow.backend == "perceiver" else 0,
        cpus_per_gpu=4,  # SLURM: CPUs beside each GPU (decoding, DataLoader workers)
    params:
        settings=job_settings("flow"),
    script:
        "../scripts/flow.py"


rule flow_mask:
    input:
        manifest=L.manifest,
        flow=L.shard("flow", "{shard}"),
    output:
        L.shard("flow_mask", "{shard}"),
    log:
        L.log("flow_mask", "{shard}"),
    benchmark:
        L.benchmark("flow_mask", "{shard}")
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=job_settings("flow_mask"),
    script:
        "../scripts/flow_mask.py"


rule flow_figure:
    input:
        manifest=L.manifest,
        frames=lambda wc: L.shard("frames", shards()[0]),
        flow=lambda wc: L.shard("flow", shards()[0]),
        flow_mask=lambda wc: L.shard("flow_mask", shards()[0]),
    output:
        report(L.figure("flow"), category="Flow", caption="../report/flow.rst"),
    log:
        L.log("flow_figure"),
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figures=config["flow"]["figures"],
    script:
        "../scripts/flow_figure.py"
