"""Rule models: snakemake -> ssp.io.hub.fetch (the one job allowed on the network)."""
import os
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821
# the workflow runs every job offline; huggingface_hub reads this when it is first imported
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["TRANSFORMERS_OFFLINE"] = "0"

from ssp.io import hub, logs  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
try:
    rows = hub.fetch(snakemake.config)  # noqa: F821
except hub.FetchError as exc:
    sys.exit(f"fetch-models: {exc}")
print(hub.report(rows, hub.lock_path(snakemake.config)) if rows else "no model named by hub id or URL")  # noqa: F821
