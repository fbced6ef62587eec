# Optical flow (Perceiver IO / DIS / Farneback), Eq. 1 smoothing and the flow mask M_O.


rule flow:
    input:
        manifest=RUN / "manifest.csv",
        frames=RUN / "frames" / "{shard}.h5",
    output:
        RUN / "flow" / "{shard}.h5",
    params:
        backend=flow_params(),
    log:
        RUN / "logs" / "flow" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "flow" / "{shard}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU if CFG.flow.backend == "perceiver" else 0,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/flow.py"


rule flow_mask:
    input:
        manifest=RUN / "manifest.csv",
        flow=RUN / "flow" / "{shard}.h5",
    output:
        RUN / "flow_mask" / "{shard}.h5",
    params:
        mask={k: config["flow"][k] for k in ("gray", "min_magnitude", "binarize", "threshold", "min_blob")},
    log:
        RUN / "logs" / "flow_mask" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "flow_mask" / "{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/flow_mask.py"


rule flow_figure:
    input:
        manifest=RUN / "manifest.csv",
        frames=lambda wc: RUN / "frames" / f"{shards()[0]}.h5",
        flow=lambda wc: RUN / "flow" / f"{shards()[0]}.h5",
        flow_mask=lambda wc: RUN / "flow_mask" / f"{shards()[0]}.h5",
    output:
        report(RUN / "figures" / "flow.png", category="Flow", caption="../report/flow.rst"),
    params:
        figures=config["flow"]["figures"],
    log:
        RUN / "logs" / "flow_figure.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/flow_figure.py"
