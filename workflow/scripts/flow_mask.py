"""Rule flow_mask: snakemake -> ssp.flow_stage.run_flow_mask for one shard."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.config import Config  # noqa: E402
from ssp.datasets import read_manifest  # noqa: E402
from ssp.flow_stage import run_flow_mask  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
run_flow_mask(read_manifest(snakemake.input.manifest), snakemake.wildcards.shard,  # noqa: F821
              snakemake.input.flow, snakemake.output[0], Config.from_dict(snakemake.config))  # noqa: F821
