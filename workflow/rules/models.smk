# The one rule that reaches the network: `snakemake models` fetches every model the config names
# by hub id or URL into the cache, checks each file's hash and writes the lock (hub.lock). It has
# no output, so it runs whenever it is asked for, and downloads nothing already fetched; it runs
# where Snakemake runs (the login node on a cluster). Every other job reads offline
# (HF_HUB_OFFLINE=1, set in common.smk).


rule models:
    log:
        # the models serve every dataset: beside the runs, not in one of them
        os.path.join(config["results"], "logs", "models.log"),
    localrule: True
    conda:
        "../../envs/torch.yaml"
    params:
        config_files=[str(f) for f in CONFIG_FILES],  # named in the report's commands
    script:
        "../scripts/fetch_models.py"
