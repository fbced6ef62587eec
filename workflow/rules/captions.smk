# The two text prompts per video (Q1 -> A1, Q2 with A1 -> A2), one resumable JSONL per shard.


rule captions:
    input:
        manifest=RUN / "manifest.csv",
        frames=RUN / "frames" / "{shard}.h5",
    output:
        RUN / "captions" / "{shard}.jsonl",
    params:
        captions=config["captions"],
    log:
        RUN / "logs" / "captions" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "captions" / "{shard}.tsv"
    threads: 2
    resources:
        mem_mb=32000 if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 2000,
        runtime=600,
        gpu=GPU if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 0,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/captions.py"


rule captions_study:
    input:
        manifest=RUN / "manifest.csv",
        frames=RUN / "frames" / "{shard}.h5",
    output:
        RUN / "captions_q1{q1}" / "{shard}.jsonl",
    params:
        captions=config["captions"],
    log:
        RUN / "logs" / "captions_q1{q1}" / "{shard}.log",
    benchmark:
        RUN / "benchmarks" / "captions_q1{q1}" / "{shard}.tsv"
    threads: 2
    resources:
        mem_mb=32000 if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 2000,
        runtime=600,
        gpu=GPU if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 0,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/captions.py"
