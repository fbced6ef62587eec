"""Checkpoint manifest: snakemake -> ssp.datasets.manifest.build_manifest."""
import logging
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.datasets.manifest import build_manifest, shards_of, write_manifest  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
df = build_manifest(Config.from_dict(snakemake.config, models=False))  # noqa: F821
write_manifest(df, snakemake.output.manifest)  # noqa: F821
logging.getLogger("ssp").info("manifest: %d videos, %d shards", len(df), len(shards_of(df)))
