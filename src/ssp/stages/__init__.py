"""The stage registry: every shard stage of the pipeline, in the order the data flows.

One entry per stage, one signature (``Stage.run(cfg, manifest, shard, out, source)``), and the
list the CLI, the run summary and the rules take. Importing it imports no stage: flow, VGGish and
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
    about: str

    def run(self, cfg, manifest: str | Path, shard: str, out: str | Path, source: str | Path | None = None,
            log_file: str | Path | None = None) -> list:
        """Write one shard of this stage to ``out`` from the manifest (a CSV path) and, for a stage
        with a ``source``, that stage's shard; returns the failures recorded in it (the captions
        stage, which may run in another interpreter, records them in its JSONL and returns None)."""
        module, name = self.function.split(":")
        fn = getattr(importlib.import_module(module), name)
        if self.name == "captions":   # in this process, or in captions.python's interpreter
            return fn(cfg, manifest, shard, source, out, log_file)
        from ssp.datasets.manifest import read_manifest

        sources = [] if self.source is None else [source]
        return fn(read_manifest(manifest), shard, *sources, out, cfg)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("frames", None, "preprocess", "ssp.stages.preprocess:run_frames", "frames at 1 fps"),
    Stage("audio", None, "preprocess", "ssp.stages.preprocess:run_audio", "audio at 16 kHz mono"),
    Stage("masks", None, "preprocess", "ssp.stages.preprocess:run_masks", "ground-truth masks"),
    Stage("flow", "frames", "flow", "ssp.stages.flow:run_flow", "optical flow"),
    Stage("flow_mask", "flow", "flow_mask", "ssp.stages.flow:run_flow_mask", "Eq. 1 maps and M_O"),
    Stage("vggish", "audio", "vggish", "ssp.stages.vggish:run_vggish", "VGGish features"),
    Stage("captions", "frames", "captions", "ssp.stages.captions:caption_shard", "text prompts A1, A2"),
)}

# the stages the `preprocess` rule writes (from the dataset itself)
PREPROCESS = tuple(name for name, s in STAGES.items() if s.rule == "preprocess")
