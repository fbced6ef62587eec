"""Checkpoints of a training run: what it was trained with (``run_fingerprint``), the resumable
state (model, optimizer, scheduler, RNG states, position in the epoch), the best validation
epoch's weights (``BestEpoch``) and the trained model another run loads (``write_trained``,
``read_trained``).

Nothing here unpickles arbitrary objects: trained models are safetensors with their metadata in
a JSON file beside them, and the resume checkpoint (optimizer state, RNG states as tensors) and
an older run's ``model.pt`` are read with ``torch.load(..., weights_only=True)``, which refuses
any pickle that would build other objects or run code."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ssp.config import Config, changes_weights
from ssp.io.files import atomic_path, write_text
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
    doc = {"train": train_settings, "model": cfg.raw["model"], "models": cfg.model_provenance(),
           "variant": variant_name, "task": task,
           "stepping_stone": stepping_stone, "videos": list(ds.rows["video_id"]), "inputs": stats,
           "captions": hashlib.sha256(json.dumps(captions or {}, sort_keys=True).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: Path, model, opt, sched, epoch: int, step_in_epoch: int, global_step: int,
                    fingerprint: str = "", phase: int = 1) -> None:
    """``phase``: the adapters' training phase (``train.tune: adapters``), 1 otherwise."""
    inner = model.module if hasattr(model, "module") else model
    state = {"model": inner.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "fingerprint": fingerprint,
             "phase": phase, "rng": _rng_states()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _rng_states() -> dict:
    """The RNG states as tensors and plain values, which ``weights_only`` loading accepts (numpy's
    key array as an int64 tensor; Python's state is a tuple of ints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def read_checkpoint(path: Path, *, set_aside: bool = True) -> dict | None:
    """A resume checkpoint, loaded with ``weights_only=True``; None, with a warning naming the file
    and the reason, for one that cannot be read: one written by an older version (numpy's RNG state
    pickled), or a damaged one (a cut or corrupt file), which is also moved aside to
    ``<name>.unreadable-<time>`` (``set_aside``: by DDP's rank 0 only) so that no retry trips on it
    again. The run then trains from the start (the checkpoint is the run's only resumable state)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        log.warning("%s cannot be read without unpickling arbitrary objects (%s); training from the start",
                    path, str(exc).strip().splitlines()[0][:160])
        return None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:   # torch's zip reader on a torn file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if not set_aside:
            log.warning("checkpoint %s cannot be read (%s); training from the start", path, reason)
            return None
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        with contextlib.suppress(FileNotFoundError):   # another rank's or run's move came first
            os.replace(path, aside)
        log.warning("checkpoint %s cannot be read (%s): moved to %s, and training starts from the beginning",
                    path, reason, aside.name)
        return None


def restore_checkpoint(state: dict, model, opt, sched) -> tuple[int, int, int]:
    """Model, optimizer, scheduler and RNG states from a ``read_checkpoint`` dict; returns
    (epoch, step in the epoch, global step)."""
    inner = model.module if hasattr(model, "module") else model
    inner.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(rng["python"])
    return state["epoch"], state["step_in_epoch"], state["global_step"]


class BestEpoch:
    """Which epoch's weights the trained model gets: the best validation mIoU (``select: best_val``)
    or the last epoch. The best so far is kept in best.safetensors, with best.json saying its epoch, its mIoU and
    which epochs were validated (a resumed run continues from them, and validates an epoch whose
    validation was cut short; a checkpoint from before best.json existed has its later epochs only)."""

    def __init__(self, out: Path, select: str, *, fresh: bool):
        self.weights, self.record, self.select = out / "best.safetensors", out / "best.json", select
        if fresh:   # a run from the start: the files of an earlier run are stale
            self.weights.unlink(missing_ok=True)
            self.record.unlink(missing_ok=True)
        self.best = json.loads(self.record.read_text()) if self.record.exists() else \
            {"epoch": 0, "val_miou": None, "validated": 0}

    @property
    def validated(self) -> int:
        return self.best["validated"]

    def load(self) -> dict:
        """The best epoch's weights (a state dict)."""
        return load_file(str(self.weights))

    def kept(self) -> int | None:
        """The epoch whose weights best.safetensors holds, or None without validation figures."""
        return self.best["epoch"] if self.best["val_miou"] is not None and self.weights.exists() else None

    def update(self, model: SSPModel, epoch: int, val: dict) -> None:
        """After validating ``model`` (not DDP-wrapped, as ``validate`` takes it) of ``epoch`` completed
        epochs (``val``: ``validate``'s figures)."""
        miou = val.get("val_miou")
        if miou is not None and (self.best["val_miou"] is None or miou > self.best["val_miou"]):   # kept
            # under `select: last` too, so that a change of `select` chooses again without training
            with atomic_path(self.weights) as tmp:
                save_file(_plain_tensors(model.state_dict()), str(tmp))
            self.best.update(epoch=epoch, val_miou=miou)
        self.best["validated"] = epoch
        self.best.setdefault("since", epoch)   # the first epoch validated
        write_text(self.record, json.dumps(self.best))

    def final(self, model: SSPModel, epochs: int) -> tuple[dict, dict]:
        """The weights for the trained model and how they were chosen (``model``: the last epoch's, unwrapped)."""
        if self.select == "best_val" and self.best["val_miou"] is not None:
            by, since = "best validation mIoU", self.best.get("since", 1)
            if since > 1:
                by += f" of epochs {since}-{self.best['validated']}"
                log.warning("epochs 1-%d of this run were never validated (its checkpoint predates best.json): "
                            "the trained model is the best of epochs %d-%d; train from the start to choose among all",
                            since - 1, since, self.best["validated"])
            return (self.load(),
                    {"by": by, "epoch": self.best["epoch"], "val_miou": self.best["val_miou"]})
        if self.select == "best_val":
            log.warning("no validation figures (no val videos): the trained model holds the last epoch")
        why = "train.select: last" if self.select == "last" else "last epoch (no validation figures)"
        return model.state_dict(), {"by": why, "epoch": epochs}


def _plain_tensors(state: dict) -> dict:
    """A state dict safetensors can write: contiguous tensors that share no memory (tied weights are
    written twice; ``load_state_dict`` ties them again)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def metadata_path(weights: Path) -> Path:
    """The JSON beside a trained model's safetensors: ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def write_trained(path: Path, weights: dict, meta: dict) -> None:
    """A trained model: its weights as safetensors at ``path``, its metadata (variant, task,
    stepping stone, tuning, the model section it was built with, which epoch and why, the models it
    started from) as JSON beside it. Each file is written whole or not at all."""
    path = Path(path)
    meta_file = metadata_path(path)
    write_text(meta_file, json.dumps({"format": TRAINED_FORMAT, **meta}, indent=1, sort_keys=True, default=str))
    with atomic_path(path) as tmp:
        save_file(_plain_tensors(weights), str(tmp), metadata={"format": "pt", "ssp": TRAINED_FORMAT})


TRAINED_FORMAT = "ssp-trained-1"


class TrainedModelError(ValueError):
    """A trained model that cannot be loaded safely, or lacks its metadata."""


def read_trained(path: Path) -> dict:
    """A trained model as one dict: ``model`` (the state dict) and its metadata's keys.

    ``model.safetensors`` with its ``model.json`` (nothing is unpickled), or an older run's
    ``model.pt`` with ``weights_only=True``: a pickle that would build any other object or run code
    is refused, with the file named."""
    path = Path(path)
    if path.suffix == ".safetensors":
        meta_file = metadata_path(path)
        if not meta_file.is_file():
            raise TrainedModelError(f"{path}: its metadata {meta_file} is missing (variant, task and the model "
                                    "section it was trained with); copy it with the weights")
        meta = json.loads(meta_file.read_text())
        return {**meta, "model": load_file(str(path))}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TrainedModelError(f"{path}: refused, it holds objects other than tensors and plain values, which "
                                f"loading would have to run code to build ({str(exc).strip().splitlines()[0][:200]}). "
                                "Load only models from people you trust, and only as model.safetensors + "
                                "model.json") from None
    if not isinstance(state, dict) or "model" not in state:
        raise TrainedModelError(f"{path}: not a trained model of this project (no 'model' state dict)")
    return state
