# The two text prompts per video (Q1 -> A1, Q2 with A1 -> A2), one resumable JSONL per shard.
# MiniCPM-o's own code needs transformers 4.44.2: with --use-conda its rules get envs/minicpmo.yaml;
# without, captions.python names an interpreter of such an environment (make minicpmo-env).
# captions.python is left out of params: where the stage runs changes no caption.

CAPTIONS_ENV = "../../envs/minicpmo.yaml" if CFG.captions.backend == "minicpm-o" else "../../envs/torch.yaml"
_minicpmo_warning = minicpmo_environment_warning(
    CFG, uses_conda=any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method))
if _minicpmo_warning:
    logger.warning(f"WARNING: {_minicpmo_warning}")
CAPTIONS_PARAMS = {k: v for k, v in config["captions"].items() if k != "python"}


rule captions:
    input:
        manifest=RUN / "manifest.csv",
        frames=RUN / "frames" / "{shard}.h5",
    output:
        RUN / "captions" / "{shard}.jsonl",
    params:
        captions=CAPTIONS_PARAMS,
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
        CAPTIONS_ENV
    script:
        "../scripts/captions.py"


rule captions_study:
    input:
        manifest=RUN / "manifest.csv",
        frames=RUN / "frames" / "{shard}.h5",
    output:
        RUN / "captions_q1{q1}" / "{shard}.jsonl",
    params:
        captions=CAPTIONS_PARAMS,
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
        CAPTIONS_ENV
    script:
        "../scripts/captions.py"
