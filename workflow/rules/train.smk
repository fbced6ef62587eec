# Training and predictions: every variant of train.variants (Table 2 rows), binary or semantic.
# Stage-1 predictions (the baseline for binary tasks, a binary "stage1" model for AVSS) stand in
# for the ground truth at test: in SSP's pre-mask (Eq. 2) and in AAVS's stepping stones.
# With predict.models_from, the models of another run predict instead, and nothing trains here.


rule train:
    input:
        unpack(training_inputs),
    output:
        model=RUN / "train" / "{variant}" / "model.pt",
        metrics=RUN / "train" / "{variant}" / "metrics.csv",
    params:
        model=config["model"],
        train=train_params(),
    log:
        RUN / "logs" / "train" / "{variant}.log",
    benchmark:
        RUN / "benchmarks" / "train" / "{variant}.tsv"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=GPU * CFG.train.gpus,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train.py"


rule predict:
    input:
        unpack(training_inputs),
        model=model_file,
        stage1=stage1_of,
    output:
        h5=RUN / "predictions" / "{variant}" / "{split}.h5",
        png=directory(RUN / "predictions" / "{variant}" / "{split}_png"),
    params:
        model=lambda wc: str(model_file(wc)),  # another run's models (predict.models_from) re-predict
    log:
        RUN / "logs" / "predict" / "{variant}_{split}.log",
    benchmark:
        RUN / "benchmarks" / "predict" / "{variant}_{split}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/predict.py"
