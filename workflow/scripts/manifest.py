"""Checkpoint manifest: snakemake -> ssp.datasets.manifest.build_manifest."""
import logging

from _job import start

start(snakemake)

from ssp.config import Config
from ssp.datasets.manifest import build_manifest, shards_of, write_manifest, write_refused

refused = []
df = build_manifest(Config.from_dict(snakemake.config, models=False), refused)
write_manifest(df, snakemake.output.manifest)
write_refused(refused, snakemake.output.manifest)
logging.getLogger("ssp").info("manifest: %d videos, %d shards, %d refused", len(df), len(shards_of(df)), len(refused))
