"""The stage registry: every shard stage of the pipeline, in the order the data flows.

One entry per stage and the list the CLI, the run summary and the rules take. Every stage's
function has one signature, ``fn(manifest, shard, *sources, out, cfg)``: the manifest (its file
or frame), the shard's id, the shard of the stage it reads (none for the stages that read the
dataset), the file it writes, the config; it returns the failures it recorded. Importing it imports no stage: flow, VGGish and
the captions need torch or models, which planning and the preprocessing environment lack, so a
stage's module is imported when it runs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str
    source: str | None   # the stage whose shard it reads (None: the dataset, through the manifest)
    rule: str            # the Snakemake rule that writes it
    function: str        # "module:function", imported on use

    def run(self, cfg, manifest: str | Path, shard: str, out: str | Path, source: str | Path | None = None) -> list:
        """Write one shard of this stage to ``out`` from the manifest (a CSV path) and, for a stage
        with a ``source``, that stage's shard; returns the failures recorded in it."""
        module, name = self.function.split(":")
        fn = getattr(importlib.import_module(module), name)
        sources = [] if self.source is None else [source]
        return fn(manifest, shard, *sources, out, cfg)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("frames", None, "preprocess", "ssp.stages.preprocess:run_frames"),
    Stage("audio", None, "preprocess", "ssp.stages.preprocess:run_audio"),
    Stage("masks", None, "preprocess", "ssp.stages.preprocess:run_masks"),
    Stage("flow", "frames", "flow", "ssp.stages.flow:run_flow"),
    Stage("flow_mask", "flow", "flow_mask", "ssp.stages.flow:run_flow_mask"),
    Stage("vggish", "audio", "vggish", "ssp.stages.vggish:run_vggish"),
    Stage("captions", "frames", "captions", "ssp.stages.captions:caption_shard"),
)}

# the stages the `preprocess` rule writes (from the dataset itself)
PREPROCESS = tuple(name for name, s in STAGES.items() if s.rule == "preprocess")
