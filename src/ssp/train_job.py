"""Entry points shared by the CLI and the rules: one training job, one prediction job.

With ``train.gpus > 1`` the training job re-launches itself under ``torchrun`` (one process per
GPU, DistributedDataParallel) inside the same job allocation.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .captions_stage import read_captions
from .config import Config
from .datasets import read_manifest

log = logging.getLogger(__name__)


def load_captions(files) -> dict[str, dict]:
    caps: dict[str, dict] = {}
    for f in files:
        caps.update(read_captions(f))
    return caps


def with_overrides(cfg: Config, extra: dict) -> Config:
    """The config with a study's override applied (post-mask weight sweep, Q1 variant)."""
    import dataclasses

    if "postmask_weight" in extra:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, postmask_weight=extra["postmask_weight"]))
    return cfg


def run_training(cfg: Config, variant: str, out_dir: str | Path, *, captions_files=(), max_steps=None) -> Path:
    from .model.ssp import parse_variant
    from .train import train

    out_dir = Path(out_dir)
    preset, extra = parse_variant(variant)
    cfg = with_overrides(cfg, extra)
    semantic = cfg.train.task == "semantic"
    if cfg.train.gpus > 1 and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        conf = out_dir / "config.yaml"
        conf.write_text(yaml.safe_dump(cfg.raw))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.train.gpus}", "-m", "ssp",
               "train", "--config", str(conf), "--variant", variant, "--out", str(out_dir),
               "--captions", *map(str, captions_files)]
        log.info("launching %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
        return out_dir / "model.pt"
    # "stage1" (semantic runs only) is the binary baseline whose predictions are the stepping
    # stones at test; in training the stones are the ground truth (0.5 on unlabeled frames).
    is_stage1 = preset == "stage1"
    return train(cfg, read_manifest(cfg.run_dir / "manifest.csv"), "baseline" if is_stage1 else preset,
                 out_dir, captions=load_captions(captions_files), stepping_stone=semantic and not is_stage1,
                 max_steps=max_steps, task="binary" if is_stage1 else cfg.train.task)


def run_prediction(cfg: Config, variant: str, split: str, weights, out, *, captions_files=(), stage1=None):
    from .model.ssp import parse_variant
    from .predict import predict

    task = "binary" if parse_variant(variant)[0] == "stage1" else cfg.train.task
    return predict(cfg, read_manifest(cfg.run_dir / "manifest.csv"), weights, split, out,
                   captions=load_captions(captions_files), stage1=stage1, task=task)
