# Training and predictions: every variant of train.variants (Table 2 rows), binary or semantic.
# Stage-1 predictions (the baseline for binary tasks, a binary "stage1" model for AVSS) stand in
# for the ground truth at test: in SSP's pre-mask (Eq. 2) and in AAVS's stepping stones.
# With predict.models_from, the models of another run predict instead, and nothing trains here.


rule train:
    input:
        unpack(training_inputs),
        fetched=fetched,  # models named by hub id: fetched (common.smk)
        stage1_val=stage1_val,
    output:
        model=L.train_dir("{variant}") / MODEL_FILE,
        meta=L.train_dir("{variant}") / "model.json",
        metrics=L.train_dir("{variant}") / "metrics.csv",
    log:
        L.log("train", "{variant}"),
    benchmark:
        L.benchmark("train", "{variant}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=64000,
        runtime=2880,
        gpu=GPU * CFG.train.gpus,
        cpus_per_gpu=8,
    params:
        settings=job_settings("train"),
    script:
        "../scripts/train.py"


rule predict:
    input:
        unpack(training_inputs),
        fetched=fetched,  # models named by hub id: fetched (common.smk)
        model=model_file,
        stage1=stage1_of,
    output:
        h5=L.predictions("{variant}", "{split}"),
        png=directory(L.prediction_pngs("{variant}", "{split}")),
    log:
        L.log("predict", "{variant}_{split}"),
    benchmark:
        L.benchmark("predict", "{variant}_{split}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=32000,
        runtime=240,
        gpu=GPU,
        cpus_per_gpu=4,
    params:
        settings=job_settings("predict"),
        model=lambda wc: str(model_file(wc)),  # another run's models (predict.models_from) re-predict
    script:
        "../scripts/predict.py"
