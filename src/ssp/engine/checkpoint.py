"""Checkpoints of a training run: what it was trained with (``run_fingerprint``), the resumable
state (model, optimizer, scheduler, RNG states, position in the epoch) and the best validation
epoch's weights (``BestEpoch``)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from ssp.config import Config, changes_weights
from ssp.model.ssp import SSPModel

log = logging.getLogger(__name__)


def run_fingerprint(cfg: Config, variant_name: str, task: str, stepping_stone: bool, ds, captions=None,
                    stage1: str | None = None, stage1_val: str | None = None) -> str:
    """What a checkpoint was trained with: the settings that change the weights, and the input
    files (path, size, modification time). A checkpoint resumes only a run with the same one."""
    files = sorted({str(st.stage_dir / f"{shard}.h5") for st in ds.stores.values() for shard in set(st.index.values())})
    files += [str(f) for f in (stage1, stage1_val) if f]   # the validation's stand-in too: it chooses the epoch
    stats = [(f, st.st_size, st.st_mtime_ns) for f in files if os.path.exists(f) for st in [os.stat(f)]]
    train_settings = changes_weights(dataclasses.asdict(cfg.train))
    doc = {"train": train_settings, "model": dataclasses.asdict(cfg.model), "variant": variant_name, "task": task,
           "stepping_stone": stepping_stone, "videos": list(ds.rows["video_id"]), "inputs": stats,
           "captions": hashlib.sha256(json.dumps(captions or {}, sort_keys=True).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: Path, model, opt, sched, epoch: int, step_in_epoch: int, global_step: int,
                    fingerprint: str = "", phase: int = 1) -> None:
    """``phase``: the adapters' training phase (``train.tune: adapters``), 1 otherwise."""
    inner = model.module if hasattr(model, "module") else model
    state = {"model": inner.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "fingerprint": fingerprint,
             "phase": phase,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_checkpoint(state: dict, model, opt, sched) -> tuple[int, int, int]:
    """Model, optimizer, scheduler and RNG states from a ``read_checkpoint`` dict; returns
    (epoch, step in the epoch, global step)."""
    inner = model.module if hasattr(model, "module") else model
    inner.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state["epoch"], state["step_in_epoch"], state["global_step"]


class BestEpoch:
    """Which epoch's weights model.pt gets: the best validation mIoU (``select: best_val``) or the
    last epoch. The best so far is kept in best.pt, with best.json saying its epoch, its mIoU and
    which epochs were validated (a resumed run continues from them, and validates an epoch whose
    validation was cut short; a checkpoint from before best.json existed has its later epochs only)."""

    def __init__(self, out: Path, select: str, *, fresh: bool):
        self.weights, self.record, self.select = out / "best.pt", out / "best.json", select
        if fresh:   # a run from the start: the files of an earlier run are stale
            self.weights.unlink(missing_ok=True)
            self.record.unlink(missing_ok=True)
        self.best = json.loads(self.record.read_text()) if self.record.exists() else \
            {"epoch": 0, "val_miou": None, "validated": 0}

    @property
    def validated(self) -> int:
        return self.best["validated"]

    def kept(self) -> int | None:
        """The epoch whose weights best.pt holds, or None without validation figures."""
        return self.best["epoch"] if self.best["val_miou"] is not None and self.weights.exists() else None

    def update(self, model: SSPModel, epoch: int, val: dict) -> None:
        """After validating ``model`` (not DDP-wrapped, as ``validate`` takes it) of ``epoch`` completed
        epochs (``val``: ``validate``'s figures)."""
        miou = val.get("val_miou")
        if miou is not None and (self.best["val_miou"] is None or miou > self.best["val_miou"]):   # kept
            # under `select: last` too, so that a change of `select` chooses again without training
            tmp = self.weights.with_name(self.weights.name + ".tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, self.weights)
            self.best.update(epoch=epoch, val_miou=miou)
        self.best["validated"] = epoch
        self.best.setdefault("since", epoch)   # the first epoch validated
        tmp = self.record.with_name(self.record.name + ".tmp")
        tmp.write_text(json.dumps(self.best))
        os.replace(tmp, self.record)

    def final(self, model: SSPModel, epochs: int) -> tuple[dict, dict]:
        """The weights for model.pt and how they were chosen (``model``: the last epoch's, unwrapped)."""
        if self.select == "best_val" and self.best["val_miou"] is not None:
            by, since = "best validation mIoU", self.best.get("since", 1)
            if since > 1:
                by += f" of epochs {since}-{self.best['validated']}"
                log.warning("epochs 1-%d of this run were never validated (its checkpoint predates best.json): "
                            "model.pt is the best of epochs %d-%d; train from the start to choose among all",
                            since - 1, since, self.best["validated"])
            return (torch.load(self.weights, map_location="cpu", weights_only=True),
                    {"by": by, "epoch": self.best["epoch"], "val_miou": self.best["val_miou"]})
        if self.select == "best_val":
            log.warning("no validation figures (no val videos): model.pt holds the last epoch")
        why = "train.select: last" if self.select == "last" else "last epoch (no validation figures)"
        return model.state_dict(), {"by": why, "epoch": epochs}
