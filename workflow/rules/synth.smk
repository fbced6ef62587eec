# SynthAVS: a seeded synthetic dataset in the AVSBench-semantic layout (demo and tests).


rule synth:
    output:
        metadata=DATA / "metadata.csv",
        labels=DATA / "label2idx.json",
    log:
        L.log("synth"),
    benchmark:
        L.benchmark("synth")
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=job_settings("synth"),
    script:
        "../scripts/synth.py"
