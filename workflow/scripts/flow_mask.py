"""Rule flow_mask: snakemake -> the flow_mask stage (Eq. 1, M_O) for one shard."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.io import logs  # noqa: E402
from ssp.stages import STAGES  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
STAGES["flow_mask"].run(  # noqa: F821
    Config.from_dict(snakemake.config, models=False), snakemake.input.manifest, snakemake.wildcards.shard,  # noqa: F821
    snakemake.output[0], snakemake.input.flow)  # noqa: F821
