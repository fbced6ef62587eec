"""Rule flow_figure: snakemake -> ssp.stages.flow.figure."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.io import logs  # noqa: E402
from ssp.io.store import ShardReader  # noqa: E402
from ssp.stages.flow import figure  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
frames, flows, masks = ShardReader(inp.frames), ShardReader(inp.flow), ShardReader(inp.flow_mask)
videos = [v for v in masks.videos() if v in frames][: snakemake.params.figures]  # noqa: F821
figure(videos, frames, flows, masks, snakemake.output[0])  # noqa: F821
