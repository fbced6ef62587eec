"""Checkpoint manifest: snakemake -> ssp.datasets.manifest.build_manifest."""
import logging
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.datasets.manifest import build_manifest, shards_of, write_manifest, write_refused  # noqa: E402
from ssp.io import logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
refused = []
df = build_manifest(Config.from_dict(snakemake.config, models=False), refused)  # noqa: F821
write_manifest(df, snakemake.output.manifest)  # noqa: F821
write_refused(refused, snakemake.output.manifest)  # noqa: F821  (beside it: output.refused)
logging.getLogger("ssp").info("manifest: %d videos, %d shards, %d refused", len(df), len(shards_of(df)), len(refused))
