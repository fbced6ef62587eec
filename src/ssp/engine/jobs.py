"""Entry points shared by the CLI and the rules: one training job, one prediction job.

With ``train.gpus > 1`` the training job re-launches itself under ``torchrun --standalone`` (one
process per GPU, DistributedDataParallel) inside the same job allocation; its rendezvous takes a
free local port, so several such jobs share a node.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ssp import env_with_package
from ssp.config import Config
from ssp.datasets.manifest import read_manifest
from ssp.io.captions import read_captions
from ssp.io.files import write_text
from ssp.layout import MODEL_FILE, RunLayout, stage_dirs
from ssp.stages import job_config
from ssp.variants import parse_variant, stage1_settings, with_overrides

log = logging.getLogger(__name__)


def load_captions(files) -> dict[str, dict]:
    caps: dict[str, dict] = {}
    for f in files:
        caps.update(read_captions(f))
    return caps


def run_training(cfg: Config, variant: str, out_dir: str | Path, *, captions_files=(), max_steps=None,
                 inputs: dict | None = None, stage1_val: str | Path | None = None) -> Path:
    """Train one variant. ``inputs``: what the rule declares, ``{"manifest": path, "frames": [shard
    files], "masks": [...], "vggish": [...], "flow_mask": [...]}``; the job reads those files and no
    others (default: the run layout's). ``stage1_val``: the stage-1 model's predictions of the val
    split, the pre-mask's stand-in for M_GT in validation when ``train.premask_test`` is stage1."""
    from ssp.engine.loop import train

    out_dir = Path(out_dir)
    preset, extra = parse_variant(variant)
    cfg = job_config(cfg, "train")
    cfg = stage1_settings(cfg) if preset == "stage1" else with_overrides(cfg, extra)
    semantic = cfg.train.task == "semantic"
    inputs = dict(inputs or {})
    manifest = inputs.pop("manifest", None) or RunLayout.of(cfg).manifest
    dirs = stage_dirs(inputs) if inputs else None
    if cfg.train.gpus > 1 and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        conf = out_dir / "config.yaml"
        write_text(conf, yaml.safe_dump(cfg.raw))
        declared = out_dir / "inputs.json"
        write_text(declared, json.dumps({"manifest": str(manifest), **{k: list(map(str, v)) for k, v in inputs.items()}}))
        # --standalone: a rendezvous on a free local port, so that two jobs on one node do not collide
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.gpus}",
               "-m", "ssp",
               "train", "--config", str(conf), "--variant", variant, "--out", str(out_dir),
               "--inputs", str(declared), *(["--stage1-val", str(stage1_val)] if stage1_val else []),
               *(["--max-steps", str(max_steps)] if max_steps else []), "--captions", *map(str, captions_files)]
        log.info("launching %s", " ".join(cmd))
        subprocess.run(cmd, check=True, env=env_with_package())   # also where the package is not installed
        return out_dir / MODEL_FILE
    # "stage1" (semantic runs only) is the binary baseline whose predictions are the stepping
    # stones at test; in training the stones are the ground truth (0.5 on unlabeled frames).
    is_stage1 = preset == "stage1"
    return train(cfg, read_manifest(manifest), "baseline" if is_stage1 else preset,
                 out_dir, captions=load_captions(captions_files), stepping_stone=semantic and not is_stage1,
                 max_steps=max_steps, task="binary" if is_stage1 else cfg.train.task, stage_dirs=dirs,
                 stage1_val=stage1_val)


def run_prediction(cfg: Config, variant: str, split: str, weights, out, *, captions_files=(), stage1=None,
                   inputs: dict | None = None):
    """One variant's predictions on a split, from the declared ``inputs`` (as ``run_training``)."""
    from ssp.engine.inference import predict

    inputs = dict(inputs or {})
    manifest = inputs.pop("manifest", None) or RunLayout.of(cfg).manifest
    preset, extra = parse_variant(variant)
    cfg = with_overrides(job_config(cfg, "predict"), extra)   # a pre-mask test study variant: its stand-in for M_GT
    task = "binary" if preset == "stage1" else cfg.train.task
    return predict(cfg, read_manifest(manifest), weights, split, out, captions=load_captions(captions_files),
                   stage1=stage1, task=task, stage_dirs=stage_dirs(inputs) if inputs else None)
