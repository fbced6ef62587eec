"""Rule flow_figure: snakemake -> ssp.stages.flow.figure."""

from _job import start

start(snakemake)

from ssp.io.store import ShardReader
from ssp.stages.flow import figure

inp = snakemake.input
frames, flows, masks = ShardReader(inp.frames), ShardReader(inp.flow), ShardReader(inp.flow_mask)
videos = [v for v in masks.videos() if v in frames][: snakemake.params.figures]
figure(videos, frames, flows, masks, snakemake.output[0])
