# SynthAVS: a seeded synthetic dataset in the AVSBench-semantic layout (demo and tests).


rule synth:
    output:
        metadata=DATA / "metadata.csv",
        labels=DATA / "label2idx.json",
    params:
        synthetic=config["synthetic"],
    log:
        RUN / "logs" / "synth.log",
    benchmark:
        RUN / "benchmarks" / "synth.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/synth.py"
