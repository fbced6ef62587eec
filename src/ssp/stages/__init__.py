"""The jobs' registry: every shard stage of the pipeline, in the order the data flows, and what
each job of the DAG reads of the config.

A job's declaration (``reads``) is the one list of the config keys (or whole sections) it reads:
its rule's params are built from it (``ssp.config.declared_settings``: a change of any of them
re-runs the job; ``x-speed-only`` keys reach the job and re-run nothing), the job's config is
narrowed to it (``job_config``: any other setting raises when read), and its outputs' provenance
records it. A declaration is a tuple of keys, or a function of the config mapping (a key read
only under some setting: the flow backend's own settings).

Every stage's function has one signature, ``fn(manifest, shard, *sources, out, cfg)``: the
manifest (its file or frame), the shard's id, the shard of the stage it reads (none for the
stages that read the dataset), the file it writes, the config; it returns the failures it
recorded. Importing this module imports no stage: flow, VGGish and the captions need torch or
models, which planning and the preprocessing environment lack, so a stage's module is imported
when it runs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

Reads = Union[tuple, Callable[[dict], tuple]]


@dataclass(frozen=True)
class Stage:
    name: str
    source: str | None   # the stage whose shard it reads (None: the dataset, through the manifest)
    rule: str            # the Snakemake rule that writes it
    function: str        # "module:function", imported on use
    reads: Reads         # the config keys its function reads

    def run(self, cfg, manifest: str | Path, shard: str, out: str | Path, source: str | Path | None = None) -> list:
        """Write one shard of this stage to ``out`` from the manifest (a CSV path) and, for a stage
        with a ``source``, that stage's shard; returns the failures recorded in it."""
        module, name = self.function.split(":")
        fn = getattr(importlib.import_module(module), name)
        sources = [] if self.source is None else [source]
        return fn(manifest, shard, *sources, out, job_config(cfg, self.name))


def _frames(config: dict) -> tuple:
    source = config["preprocess"]["input_frames"] == "source"   # the network's copy, at model.size
    return ("dataset.layout", "preprocess.image_size", "preprocess.input_frames") + (("model.size",) if source else ())


def _flow(config: dict) -> tuple:
    own = {"dis": ("flow.dis_preset",), "perceiver": ("flow.perceiver",)}
    return ("flow.backend",) + own.get(config["flow"]["backend"], ())


FLOW_MASK = ("flow.gray", "flow.min_magnitude", "flow.binarize", "flow.threshold", "flow.min_blob")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("frames", None, "preprocess", "ssp.stages.preprocess:run_frames", _frames),
    Stage("audio", None, "preprocess", "ssp.stages.preprocess:run_audio", ("dataset.layout", "preprocess.sample_rate")),
    Stage("masks", None, "preprocess", "ssp.stages.preprocess:run_masks",
          ("dataset.layout", "dataset.root", "preprocess.image_size")),
    Stage("flow", "frames", "flow", "ssp.stages.flow:run_flow", _flow),
    Stage("flow_mask", "flow", "flow_mask", "ssp.stages.flow:run_flow_mask", FLOW_MASK),
    Stage("vggish", "audio", "vggish", "ssp.stages.vggish:run_vggish", ("vggish",)),
    Stage("captions", "frames", "captions", "ssp.stages.captions:caption_shard",
          ("captions", "dataset.layout", "dataset.root")),
)}

# the stages the `preprocess` rule writes (from the dataset itself)
PREPROCESS = tuple(name for name, s in STAGES.items() if s.rule == "preprocess")

# what the network's jobs read: the model, its training, the frames it is fed
NETWORK = ("dataset.layout", "train", "model", "preprocess.image_size", "preprocess.input_frames")
# what the other jobs that read the config read of it (training: validation's F-score protocol
# too); a rule whose script reads only its params declares nothing here
JOBS: dict[str, Reads] = {
    "synth": ("synthetic",),
    "manifest": ("dataset", "shards"),
    "train": (*NETWORK, "evaluate.fscore"),
    "predict": NETWORK,
    "evaluate": ("evaluate.fscore",),
    "page": ("page", "evaluate.fscore"),
}


def reads(job: str, config: dict) -> tuple[str, ...]:
    """The config keys ``job`` (a stage or a job of ``JOBS``) reads, under ``config`` (a mapping)."""
    declared = STAGES[job].reads if job in STAGES else JOBS[job]
    return tuple(declared(config) if callable(declared) else declared)


def job_config(cfg, job: str):
    """``cfg`` narrowed to what ``job`` reads (``Config.only``); a config narrowed to it already is
    returned as it is."""
    if cfg.declared is not None and cfg.declared[0] == job:
        return cfg
    return cfg.only(reads(job, cfg.raw), job)
