# The two text prompts per video (Q1 -> A1, Q2 with A1 -> A2), one resumable JSONL per shard.
# MiniCPM-o's own code needs transformers 4.44.2: with --use-conda its rules get envs/minicpmo.yaml;
# without, captions.python names an interpreter of such an environment (make minicpmo-env).

CAPTIONS_ENV = (
    "../../envs/minicpmo.yaml"
    if CFG.captions.backend == "minicpm-o"
    else "../../envs/torch.yaml"
)
_minicpmo_warning = minicpmo_environment_warning(
    CFG,
    uses_conda=any(
        m.name == "CONDA" for m in workflow.deployment_settings.deployment_method
    ),
)
if _minicpmo_warning:
    logger.warning(f"WARNING: {_minicpmo_warning}")


rule captions:
    input:
        fetched=fetched,  # models named by hub id: fetched (common.smk)
        manifest=L.manifest,
        frames=L.shard("frames", "{shard}"),
    output:
        L.shard("captions", "{shard}"),
    log:
        L.log("captions", "{shard}"),
    benchmark:
        L.benchmark("captions", "{shard}")
    conda:
        CAPTIONS_ENV
    threads: 2
    resources:
        mem_mb=48000 if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 2000,
        runtime=600,
        gpu=GPU if CFG.captions.backend in ("minicpm-o", "hf-vlm") else 0,
        cpus_per_gpu=4,
    params:
        settings=job_settings("captions"),  # not captions.python (speed-only): where it runs
    script:
        "../scripts/captions.py"


use rule captions as captions_study with:
    output:
        L.shard("captions_q1{q1}", "{shard}"),
    log:
        L.log("captions_q1{q1}", "{shard}"),
    benchmark:
        L.benchmark("captions_q1{q1}", "{shard}")
