"""Rule models: snakemake -> ssp.io.hub.fetch (the one job allowed on the network); the report,
or what could not be fetched, goes to the job's log too."""
import logging
import os
import sys

from _job import start

start(snakemake)
# the workflow runs every job offline; huggingface_hub reads this when it is first imported
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["TRANSFORMERS_OFFLINE"] = "0"

from ssp.io import hub

log = logging.getLogger("ssp.fetch")
try:
    rows = hub.fetch(snakemake.config)
except hub.FetchError as exc:
    log.error("fetch-models: %s", exc)
    sys.exit(1)
log.info("%s", hub.with_config_files(hub.report(rows, hub.lock_path(snakemake.config)), snakemake.params.config_files)
         if rows else "no model named by hub id or URL")
