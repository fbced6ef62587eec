"""Rule models: snakemake -> ssp.io.hub.fetch (the one job allowed on the network)."""
import os
import sys

from _job import start

start(snakemake)
# the workflow runs every job offline; huggingface_hub reads this when it is first imported
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["TRANSFORMERS_OFFLINE"] = "0"

from ssp.io import hub

try:
    rows = hub.fetch(snakemake.config)
except hub.FetchError as exc:
    sys.exit(f"fetch-models: {exc}")
print(hub.report(rows, hub.lock_path(snakemake.config)) if rows else "no model named by hub id or URL")
