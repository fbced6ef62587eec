"""Trainer: one variant, one task, from the HDF5 shards; resumable, seeded, DDP-ready.

* Schedule (config ``train``): AdamW, lr decayed by ``lr_decay`` at ``lr_decay_epoch``; batch of
  ``batch_size`` videos per process (the global batch is ``batch_size * world_size``).
* A checkpoint (model, optimizer, scheduler, RNG states, position in the epoch) is written each
  epoch, every ``checkpoint_every`` steps, and when SIGTERM arrives (SLURM preemption: the job
  then exits with 143); ``train`` resumes from it automatically, so a run killed after k steps
  and resumed reaches the same state as an uninterrupted one. A checkpoint written for other
  settings or inputs (``run_fingerprint``) is not resumed: that run starts over.
* bf16 autocast on CUDA (``precision: auto``), fused AdamW on CUDA, optional channels-last
  memory format and ``torch.compile`` (``channels_last``, ``compile``); DistributedDataParallel
  under ``torchrun``. ``benchmarks/train_throughput.py`` times ``train_step`` with these
  settings against the AAVS recipe (fp32, one video per step).
* ``train.tune: adapters`` trains AAVS's adapters of a frozen Mask2Former in two phases
  (``ssp.model.adapters``): at the first decay (``lr_decay_epoch``) the run restarts from its best validation
  epoch with the Swin adapters trained too (``start_phase2``); checkpoints record the phase.
  ``train.grad_clip`` clips the gradients' norm before each step, as AAVS's scripts do.
* ``model.pt`` holds the weights of the epoch with the best validation mIoU (``select: best_val``,
  as AVSBench and AAVS keep their best validation checkpoint; ``BestEpoch``) or of the last epoch.
* Logs: progress bars, ``metrics.csv`` and TensorBoard (when installed) in the output folder.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import TRAIN_SELECTION_ONLY, TRAIN_SPEED_ONLY, Config
from .data import VideoDataset, available_videos, collate, loader_collate, unpack_shared
from .losses import video_losses
from .metrics import SemanticAccumulator, binary_fscore_batch, binary_miou_batch
from .model.ssp import VARIANTS, SSPModel, Variant, foreground_prob
from .premask import premask, premask_flow_only, premask_for_test

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- building

def build_model(cfg: Config, variant: Variant, *, binary: bool, stepping_stone: bool = False,
                tune: str | None = None) -> SSPModel:
    """The network ``cfg``'s model section describes; with ``tune`` (default ``train.tune``)
    ``adapters``, AAVS's adapters inserted and everything but phase 1's parts frozen."""
    from .model.mask2former import build_mask2former

    m, t = cfg.model, cfg.train
    tune = tune or t.tune
    if m.mask2former is None:
        raise ValueError("'model.mask2former' is not set: a local folder with facebook/mask2former-swin-base-"
                         "ade-semantic, or 'random' (built from model.* with random weights)")
    num_labels = 2 if binary else m.num_classes   # binary: AAVS's background and sounding classes
    settings = dict(size=m.size, hidden_dim=m.hidden_dim, encoder_layers=m.encoder_layers,
                    decoder_layers=m.decoder_layers, heads=m.heads, backbone=m.raw["backbone"],
                    class_weight=t.class_weight, mask_weight=t.mask_weight, dice_weight=t.dice_weight,
                    no_object_weight=t.no_object_weight, num_points=t.num_points)
    m2f = build_mask2former(m.mask2former, num_labels, num_queries=m.num_queries if binary else m.num_queries_semantic,
                            config=settings, seed=t.seed)
    vta = None
    if variant.text != "none":
        from .model.vta import VTA, build_clip_vision, build_text_encoder

        for key in ("clip", "text_encoder", "tokenizer"):
            if getattr(m, key) is None:
                raise ValueError(f"'model.{key}' is not set (text variant {variant.text!r} needs it): "
                                 "a local folder, or 'random'")
        vta = VTA(mode=variant.text, clip=build_clip_vision(m.clip, m.raw["clip_config"], t.seed),
                  text_encoder=build_text_encoder(m.text_encoder, m.raw["text_config"], t.seed),
                  feature_dim=m2f.config.mask_feature_size)
    model = SSPModel(mask2former=m2f, variant=variant, vta=vta, stepping_stone=stepping_stone, size=m.size)
    if tune == "adapters":
        from .model import adapters

        if m.mask2former == "random":
            log.warning("train.tune: adapters with a random-weight Mask2Former: its frozen layers stay random")
        adapters.install(m2f)
        adapters.set_phase(model, phase=1, binary=binary)
    return model


def model_inputs(model: SSPModel, batch: dict, *, training: bool, premask_test: str) -> dict:
    """The model's keyword inputs for a batch: M_Pre (Eq. 2) and the stepping stone as the phase asks."""
    inner = model.module if hasattr(model, "module") else model
    kw = {}
    if inner.variant.premask:
        fm = batch["flow_mask"]
        if training:
            gt = (batch["labels"] > 0).float()
            kw["premask"] = torch.where(batch["has_mask"][:, None, None], premask(fm, gt), premask_flow_only(fm))
        else:
            kw["premask"] = premask_for_test(fm, batch.get("stage1"), premask_test)
    if inner.stone is not None:
        if training:
            gt = (batch["labels"] > 0).float()
            fallback = batch["stage1"] if "stage1" in batch else torch.full_like(gt, 0.5)
            kw["stone"] = torch.where(batch["has_mask"][:, None, None], gt, fallback.float())
        else:
            kw["stone"] = batch["stage1"].float()
    if inner.vta is not None:
        kw["text_ids"], kw["text_mask"] = batch["text_ids"].long(), batch["text_mask"].long()
    return kw


def to_device(batch: dict, device: torch.device | str, *, channels_last: bool = False) -> dict:
    """A ``collate`` batch as tensors on the device: frames [N, 3, S, S] floats in [0, 1] (uint8
    [N, S, S, 3] on the way; kept in that channels-last layout with ``channels_last``), labels
    int64, the rest as they are."""
    out = {k: torch.as_tensor(v).to(device, non_blocking=True) if isinstance(v, (np.ndarray, torch.Tensor)) else v
           for k, v in unpack_shared(batch).items()}
    frames = out["frames"].permute(0, 3, 1, 2).float().div_(255)
    out["frames"] = frames if channels_last else frames.contiguous()
    out["labels"] = out["labels"].long()
    return out


# --------------------------------------------------------------------------- distributed

def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, else a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> None:
    rank, world, _ = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's permutation of the training videos: the same on every rank and after a resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


# --------------------------------------------------------------------------- checkpoints

def run_fingerprint(cfg: Config, variant_name: str, task: str, stepping_stone: bool, ds, captions=None,
                    stage1: str | None = None) -> str:
    """What a checkpoint was trained with: the settings that change the weights, and the input
    files (path, size, modification time). A checkpoint resumes only a run with the same one."""
    files = sorted({str(st.stage_dir / f"{shard}.h5") for st in ds.stores.values() for shard in set(st.index.values())})
    if stage1:
        files.append(str(stage1))
    stats = [(f, st.st_size, st.st_mtime_ns) for f in files if os.path.exists(f) for st in [os.stat(f)]]
    train_settings = {k: v for k, v in dataclasses.asdict(cfg.train).items()
                      if k not in TRAIN_SPEED_ONLY + TRAIN_SELECTION_ONLY}
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


WORKER_SIGTERM_GRACE_S = 30


def _defer_sigterm(_worker_id: int) -> None:
    """DataLoader workers outlive a SIGTERM by WORKER_SIGTERM_GRACE_S seconds.

    SLURM signals every process of the job at once; the main process must finish its step and
    write the checkpoint before a dead worker makes the loader raise. Ignoring SIGTERM for good
    would leave a stuck worker unkillable by the loader's own terminate() (and the interpreter
    waits for every child at exit), so the worker only postpones it: SIGALRM ends it later.
    """
    signal.signal(signal.SIGTERM, lambda *_: signal.alarm(WORKER_SIGTERM_GRACE_S))


@contextlib.contextmanager
def _epoch_batches(loader: DataLoader):
    """The loader's iterator, whose worker processes are shut down when the epoch is left in any
    way. A Preempted or failing step keeps this frame alive in its traceback, so the iterator
    would not be collected, and its workers would be left for the interpreter to wait on."""
    it = iter(loader)
    try:
        yield it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)   # multi-process iterators only
        if shutdown is not None:
            shutdown()


class Preempted(SystemExit):
    """SIGTERM arrived; a checkpoint was written."""


# --------------------------------------------------------------------------- the loop

def select(manifest: pd.DataFrame, cfg: Config, split: str) -> pd.DataFrame:
    """The videos of ``split`` in ``train.subsets`` (a folder of videos: all of them, one subset)."""
    subsets = ("videos",) if cfg.dataset.layout == "videos" else cfg.train.subsets
    return manifest[(manifest["split"] == split) & manifest["subset"].isin(subsets)].reset_index(drop=True)


def make_dataset(cfg: Config, manifest: pd.DataFrame, variant: Variant, *, stage1=None, captions=None) -> tuple:
    stages = ["frames", "masks", "vggish"] + (["flow_mask"] if (variant.premask or variant.postmask) else [])
    rows, dropped = available_videos(manifest, cfg.run_dir, stages)
    for vid, why in dropped:
        log.warning("training data: skipped %s: %s", vid, why)
    tokenizer = None
    if variant.text != "none":
        from .model.vta import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.tokenizer)
        kept = rows["video_id"].isin(list(captions))
        dropped += [(v, "no captions (see the captions stage)") for v in rows.loc[~kept, "video_id"]]
        rows = rows[kept].reset_index(drop=True)
    ds = VideoDataset(rows, cfg.run_dir, need_flow=variant.premask or variant.postmask,
                      need_text=variant.text != "none", captions=captions, stage1=stage1, tokenizer=tokenizer,
                      max_text_len=cfg.model.max_text_len)
    return ds, dropped


def training_setup(model: SSPModel, t, device: torch.device, *, world: int = 1, local: int = 0):
    """(forward module, optimizer, autocast settings) for ``train`` settings ``t``: DDP over several
    processes, channels-last weights, ``torch.compile``, fused AdamW and bf16 autocast on CUDA."""
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    fwd = model
    if world > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if device.type == "cuda" else None, find_unused_parameters=True)
    if t.compile:
        fwd = torch.compile(fwd)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay,
                            fused=device.type == "cuda")
    autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                    enabled=device.type == "cuda" and t.precision in ("auto", "bf16"))
    return fwd, opt, autocast


def train_step(fwd, model: SSPModel, opt, batch: dict, autocast: dict, t, *, binary: bool, step: int):
    """One optimizer step on a ``to_device`` batch; returns (loss, loss terms)."""
    with torch.autocast(**autocast):
        outp = fwd(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True,
                                                                   premask_test=t.premask_test))
        loss, terms = video_losses(model, outp, batch, binary=binary, postmask_weight=t.postmask_weight,
                                   use_postmask=model.variant.postmask, seed=t.seed, step=step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, t)
    opt.step()
    return loss, terms


def clip_gradients(model, t) -> None:
    """The trained parameters' gradients clipped to a global L2 norm of ``train.grad_clip`` (if set)."""
    if t.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)


def lr_schedule(opt, t, *, start_epoch: int = 0):
    """The step schedule on ``opt`` (``lr_decay`` every ``lr_decay_epoch`` epochs), ``start_epoch`` epochs in."""
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_decay_epoch, gamma=t.lr_decay)
    for _ in range(start_epoch):
        step_schedule(sched)
    return sched


def step_schedule(sched) -> None:
    """``sched.step()`` without PyTorch's warning that no optimizer step came first (a schedule
    advanced to a later epoch; a run resumed at an epoch's very end, whose steps ran before)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
        sched.step()


def start_phase2(model: SSPModel, best: "BestEpoch", t, device, epoch: int, *, binary: bool, rank: int, world: int,
                 local: int):
    """AAVS's second phase (``train.tune: adapters``) at the start of ``epoch``: rank 0 takes the best
    validation epoch's weights so far, the Swin adapters start afresh from a seed and are trained
    too, with a new optimizer at the schedule's rate; several processes get rank 0's weights when
    DDP wraps the model again. Returns (forward module, optimizer, scheduler)."""
    from .model import adapters

    if world > 1:
        torch.distributed.barrier()   # rank 0 has validated the last epoch and written best.pt
    kept = best.kept()
    if rank == 0 and kept is not None:
        model.load_state_dict(torch.load(best.weights, map_location="cpu", weights_only=True))
    log.info("epoch %d: %s, from the weights of %s", epoch + 1, adapters.PHASE2_NOTE,
             f"epoch {kept} (best validation mIoU so far)" if kept else "the last epoch (no validation figures)")
    log.info(adapters.enter_phase2(model, seed=t.seed * 1000 + epoch, binary=binary))
    fwd, opt, _ = training_setup(model, t, device, world=world, local=local)
    return fwd, opt, lr_schedule(opt, t, start_epoch=epoch)


def train(cfg: Config, manifest: pd.DataFrame, variant_name: str, out_dir: str | Path, *,
          captions: dict | None = None, stage1_train: str | None = None, stepping_stone: bool = False,
          max_steps: int | None = None, task: str | None = None) -> Path:
    """Train one variant; returns the path of the final weights (``model.pt``)."""
    t = cfg.train
    task = task or t.task
    variant, binary = VARIANTS[variant_name], task == "binary"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world, local = dist_info()
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    setup_distributed(device)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    random.seed(t.seed)
    ds, dropped = make_dataset(cfg, select(manifest, cfg, "train"), variant, stage1=stage1_train, captions=captions)
    if len(ds) == 0:
        raise ValueError(f"no training videos for subsets {list(t.subsets)}")
    model = build_model(cfg, variant, binary=binary, stepping_stone=stepping_stone).to(device)
    ckpt = out / "checkpoint.pt"
    epoch0, skip, step = 0, 0, 0
    fingerprint = run_fingerprint(cfg, variant_name, task, stepping_stone, ds, captions, stage1_train)
    state = read_checkpoint(ckpt) if ckpt.exists() else None   # read once: it holds the optimizer too
    if state is not None and state.get("fingerprint") != fingerprint:
        log.warning("%s was written with other settings or inputs (train/model settings, variant, or "
                    "input shards changed since); training %s from the start", ckpt, variant_name)
        state = None
    phase = state.get("phase", 1) if state is not None else 1
    if t.tune == "adapters":   # at phase 2, the optimizer state to restore is phase 2's
        from .model.adapters import set_phase

        log.info(set_phase(model, phase=phase, binary=binary))
    ddp_model, opt, autocast = training_setup(model, t, device, world=world, local=local)
    sched = lr_schedule(opt, t)
    if state is not None:
        epoch0, skip, step = restore_checkpoint(state, model, opt, sched)
        log.info("resuming %s from epoch %d, step %d of the epoch (global step %d)", variant_name, epoch0, skip, step)
    del state   # not held through training
    stop = {"term": False}
    old = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("term", True))
    logger = MetricLog(out, enabled=rank == 0, fresh=step == 0)
    best = BestEpoch(out, t.select, fresh=step == 0 and rank == 0)   # only rank 0 validates and writes
    gb = t.batch_size * world
    try:
        if rank == 0 and skip == 0 and best.validated < epoch0:   # stopped while validating that epoch
            best.update(model, epoch0, validate(cfg, manifest, model, variant, binary, device, captions=captions))
        for epoch in range(epoch0, t.epochs):
            if t.tune == "adapters" and phase == 1 and epoch >= t.lr_decay_epoch:
                phase = 2
                ddp_model, opt, sched = start_phase2(model, best, t, device, epoch, binary=binary, rank=rank,
                                                     world=world, local=local)
            order = epoch_order(len(ds), t.seed, epoch)
            batches = [order[k:k + gb] for k in range(0, len(order), gb)]
            if world > 1:  # every process must step the same number of times
                batches = [bt for bt in batches if len(bt) == gb]
            mine = [bt[rank * t.batch_size:(rank + 1) * t.batch_size] for bt in batches]
            loader = DataLoader(ds, batch_sampler=mine[skip:], collate_fn=loader_collate(t.num_workers),
                                num_workers=t.num_workers,
                                worker_init_fn=_defer_sigterm)
            bar = tqdm(total=len(batches), initial=skip, desc=f"{variant_name} epoch {epoch + 1}/{t.epochs}",
                       disable=rank != 0)
            with _epoch_batches(loader) as it, bar:
                for b, batch in enumerate(it, start=skip):
                    batch = to_device(batch, device, channels_last=t.channels_last)
                    loss, terms = train_step(ddp_model, model, opt, batch, autocast, t, binary=binary, step=step)
                    step += 1
                    loss_value = reduce_mean(loss.detach(), world)
                    bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                    bar.update()
                    logger.step(step, epoch, loss_value, terms, opt.param_groups[0]["lr"])
                    done = max_steps is not None and step >= max_steps
                    if rank == 0 and (stop["term"] or done or (t.checkpoint_every and step % t.checkpoint_every == 0)):
                        save_checkpoint(ckpt, model, opt, sched, epoch, b + 1, step, fingerprint, phase)
                    if stop["term"]:
                        raise Preempted(143)
                    if done:
                        return out / "checkpoint.pt"
            skip = 0
            step_schedule(sched)
            if rank == 0:
                save_checkpoint(ckpt, model, opt, sched, epoch + 1, 0, step, fingerprint, phase)
                val = validate(cfg, manifest, model, variant, binary, device, captions=captions)
                best.update(model, epoch + 1, val)
                logger.epoch(epoch + 1, val)
        if rank == 0:
            final = out / "model.pt"
            weights, selected = best.final(model, t.epochs)
            torch.save({"model": weights, "variant": variant_name, "task": task, "stepping_stone": stepping_stone,
                        "tune": t.tune, "dropped": dropped, "model_config": cfg.raw["model"], "selected": selected}, final)
            log.info("%s: model.pt holds the weights of epoch %d (%s)", variant_name, selected["epoch"], selected["by"])
            return final
        return out / "model.pt"
    finally:
        signal.signal(signal.SIGTERM, old)
        logger.close()


def reduce_mean(x: torch.Tensor, world: int) -> float:
    if world > 1:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= world
    return float(x)


@torch.no_grad()
def predict_video(model: SSPModel, batch: dict, binary: bool, premask_test: str, out_size: int = 224):
    """Per frame: foreground probability [N, S, S] (binary) or class scores [N, C, S, S] (semantic)."""
    model.eval()
    outp = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=False,
                                                                  premask_test=premask_test))
    cls, msk = outp.final
    if binary:
        fg = foreground_prob(cls.float(), msk.float(), True).unsqueeze(1)
        return torch.nn.functional.interpolate(fg, size=(out_size, out_size), mode="bilinear",
                                               align_corners=False).squeeze(1)
    from .model.ssp import semantic_probs

    probs = semantic_probs(cls.float(), msk.float())
    return torch.nn.functional.interpolate(probs, size=(out_size, out_size), mode="bilinear", align_corners=False)


def validate(cfg: Config, manifest: pd.DataFrame, model: SSPModel, variant: Variant, binary: bool,
             device, *, captions=None, stage1=None, split: str = "val") -> dict:
    """Scores on the split, one video per batch as AVSBench tests: binary mIoU and F-score, or
    (semantic stage 2) AVSS mIoU and F over the split's frames, with the ground truth's foreground
    standing in for the stepping stones (the stage-1 predictions of the split do not exist yet)."""
    rows = select(manifest, cfg, split)
    if rows.empty:
        return {}
    if not variant.premask:
        choice = "not used"
    elif cfg.train.premask_test == "stage1" and stage1 is None:
        choice = "flow"  # the stage-1 predictions of the split do not exist during training
    else:
        choice = cfg.train.premask_test
    ds, _ = make_dataset(cfg, rows, variant, stage1=stage1, captions=captions)
    ious, fs, classes = [], [], SemanticAccumulator(cfg.model.num_classes)
    for i in range(len(ds)):
        batch = to_device(collate([ds[i]]), device)
        keep = batch["has_mask"]
        if not binary:   # stones: the ground truth's foreground (0.5, uncertain, on unlabeled frames)
            fg = (batch["labels"] > 0).float()
            batch["stage1"] = torch.where(keep[:, None, None], fg, torch.full_like(fg, 0.5))
        scores = predict_video(model, batch, binary, choice, out_size=batch["labels"].shape[-1])
        if binary:
            gt = (batch["labels"] > 0)[keep].cpu().numpy()
            ious.append(binary_miou_batch(scores[keep].cpu().numpy(), gt))
            fs.append(binary_fscore_batch(scores[keep].cpu().numpy(), gt))
        else:
            for p, g in zip(scores.argmax(1)[keep].cpu().numpy(), batch["labels"][keep].cpu().numpy()):
                classes.add(p, g)
    model.train()
    if binary:
        return {"val_miou": float(np.mean(ious)), "val_fscore": float(np.mean(fs)), "val_premask": choice,
                "val_videos": len(ds)}
    res = classes.result()
    return {"val_miou": res["miou"], "val_fscore": res["fscore"], "val_premask": choice,
            "val_stones": "ground truth", "val_videos": len(ds)}


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


class MetricLog:
    """metrics.csv (one row per step and per epoch) and TensorBoard scalars when available."""

    def __init__(self, out: Path, enabled: bool, fresh: bool = True):
        """``fresh``: a run from the start (a stale metrics.csv is replaced); else a resumed one (appended)."""
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.fh = open(out / "metrics.csv", "w" if fresh else "a", newline="")
        self.w = csv.writer(self.fh)
        if self.fh.tell() == 0:
            self.w.writerow(["time", "kind", "epoch", "step", "name", "value"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            log.info("tensorboard is not installed; metrics go to metrics.csv only")

    def _row(self, kind, epoch, step, name, value):
        self.w.writerow([f"{time.time():.0f}", kind, epoch, step, name, value])
        if self.tb is not None and isinstance(value, (int, float)):
            self.tb.add_scalar(f"{kind}/{name}", value, step)

    def step(self, step, epoch, loss, terms, lr):
        if self.enabled:
            self._row("train", epoch, step, "loss", loss)
            for k, v in terms.items():
                self._row("train", epoch, step, f"loss_{k}", v)
            self._row("train", epoch, step, "lr", lr)

    def epoch(self, epoch, val: dict):
        if self.enabled:
            for k, v in val.items():
                self._row("val", epoch, -1, k, v)
            self.fh.flush()
            log.info("epoch %d: %s", epoch, json.dumps(val))

    def close(self):
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()
