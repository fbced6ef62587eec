"""Trainer: one variant, one task, from the HDF5 shards; resumable, seeded, DDP-ready.

* Schedule (config ``train``): AdamW, lr decayed by ``lr_decay`` at ``lr_decay_epoch``; batch of
  ``batch_size`` videos per process (the global batch is ``batch_size * world_size``).
* A checkpoint (model, optimizer, scheduler, RNG states, position in the epoch) is written each
  epoch, every ``checkpoint_every`` steps, and when SIGTERM arrives (SLURM preemption: the job
  then exits with 143); ``train`` resumes from it automatically, so a run killed after k steps
  and resumed reaches the same state as an uninterrupted one. A checkpoint written for other
  settings or inputs (``run_fingerprint``) is not resumed: that run starts over.
* bf16 autocast as ``train.precision`` asks (``auto``: on CUDA), fused AdamW on CUDA, optional channels-last
  memory format and ``torch.compile`` (``channels_last``, ``compile``); DistributedDataParallel
  under ``torchrun``. ``benchmarks/train_throughput.py`` times ``train_step`` with these
  settings against the AAVS recipe (fp32, one video per step).
* ``train.tune: adapters`` trains AAVS's adapters of a frozen Mask2Former in two phases
  (``ssp.model.adapters``): at the first decay (``lr_decay_epoch``) the run restarts from its best validation
  epoch with the Swin adapters trained too (``start_phase2``); checkpoints record the phase.
  ``train.grad_clip`` clips the gradients' norm before each step, as AAVS's scripts do.
* ``model.safetensors`` (with ``model.json``: variant, task, model section, epoch, the models it
  started from) holds the weights of the epoch with the best validation mIoU (``select: best_val``,
  as AVSBench and AAVS keep their best validation checkpoint; ``BestEpoch``) or of the last epoch.
* Logs: progress bars, ``metrics.csv`` and TensorBoard (when installed) in the output folder.
"""
from __future__ import annotations

import contextlib
import csv
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

from ssp.config import Config
from ssp.engine.build import build_model, make_dataset, model_inputs, select, to_device, training_setup
from ssp.engine.checkpoint import (
    BestEpoch,
    read_checkpoint,
    restore_checkpoint,
    run_fingerprint,
    save_checkpoint,
    write_trained,
)
from ssp.engine.data import collate, loader_collate
from ssp.engine.inference import predict_video
from ssp.engine.losses import video_losses
from ssp.evaluation.metrics import SemanticAccumulator, binary_fscore_batch, binary_miou_batch
from ssp.io import logs
from ssp.layout import MODEL_FILE
from ssp.model.ssp import SSPModel, fscore_map, sounding_share
from ssp.stages import job_config
from ssp.variants import VARIANTS, Variant

log = logging.getLogger(__name__)

WORKER_SIGTERM_GRACE_S = 30


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


SUBSET_ORDER = ("v1s", "v1m", "v2")


def fixed_order(rows: pd.DataFrame) -> list[int]:
    """``train.shuffle: false``: the training videos subset after subset (v1s, v1m, v2, then any
    other), each in the manifest's order (the dataset's own), as AAVS's AVSS script concatenates
    its three datasets and loads them unshuffled (``avss/dataset.py`` 91-94)."""
    rank = {s: k for k, s in enumerate(SUBSET_ORDER)}
    subsets = rows["subset"] if "subset" in rows else pd.Series([""] * len(rows))
    return sorted(range(len(rows)), key=lambda i: rank.get(subsets.iloc[i], len(rank)))



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


def train_step(fwd, model: SSPModel, opt, batch: dict, autocast: dict, t, *, binary: bool, step: int):
    """One optimizer step on a ``to_device`` batch; returns (loss, loss terms)."""
    with torch.autocast(**autocast):
        outp = fwd(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True,
                                                                   premask_test=t.premask_test))
        loss, terms = video_losses(model, outp, batch, binary=binary, postmask_weight=t.postmask_weight,
                                   use_postmask=model.variant.postmask, seed=t.seed, step=step)
    opt.zero_grad(set_to_none=True)
    distributed = isinstance(getattr(fwd, "_orig_mod", fwd), torch.nn.parallel.DistributedDataParallel)
    if not terms and not distributed:
        return loss, terms   # nothing to learn from (AAVS: a leaf zero loss, so no parameter moves)
    loss.backward()
    clip_gradients(model, t)
    opt.step()
    return loss, terms


def clip_gradients(model, t) -> None:
    """The trained parameters' gradients clipped to a global L2 norm of ``train.grad_clip`` (if set)."""
    if t.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)


def lr_schedule(opt, t, *, start_epoch: int = 0):
    """The schedule on ``opt``, ``start_epoch`` epochs in: the rate times ``lr_decay`` from epoch
    ``lr_decay_epoch`` on, once, to the end. AAVS's scripts decay once, at their phase-2 restart:
    ``avss/train.py`` restarts AdamW at 1e-4 at ``epochs // 3`` (20 of 60) and keeps it to epoch
    60; ``avs/train.py`` likewise at ``epochs // 2``."""
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[t.lr_decay_epoch], gamma=t.lr_decay)
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
    from ssp.model import adapters

    if world > 1:
        torch.distributed.barrier()   # rank 0 has validated the last epoch and written best.safetensors
    kept = best.kept()
    if rank == 0 and kept is not None:
        model.load_state_dict(best.load())
    log.info("epoch %d: %s, from the weights of %s", epoch + 1, adapters.PHASE2_NOTE,
             f"epoch {kept} (best validation mIoU so far)" if kept else "the last epoch (no validation figures)")
    log.info(adapters.enter_phase2(model, seed=t.seed * 1000 + epoch, binary=binary))
    fwd, opt, _ = training_setup(model, t, device, world=world, local=local)
    return fwd, opt, lr_schedule(opt, t, start_epoch=epoch)


def train(cfg: Config, manifest: pd.DataFrame, variant_name: str, out_dir: str | Path, *,
          captions: dict | None = None, stage1_train: str | None = None, stepping_stone: bool = False,
          max_steps: int | None = None, task: str | None = None, stage_dirs=None, stage1_val=None) -> Path:
    """Train one variant; returns the path of the final weights (``model.safetensors``, with
    ``model.json`` beside it), or with ``max_steps`` (benchmarks, tests), of the checkpoint written
    at that step. ``stage_dirs``: each
    stage's shard folder (``layout.stage_dirs`` of the rule's inputs; default: the run layout's).
    ``stage1_val``: the stage-1 predictions of the val split, which validation's pre-mask reads
    when ``train.premask_test`` is stage1, as test does."""
    cfg = job_config(cfg, "train")
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
    ds, dropped = make_dataset(cfg, select(manifest, cfg, "train"), variant, binary=binary, stage1=stage1_train,
                               captions=captions, stage_dirs=stage_dirs)
    if len(ds) == 0:
        raise ValueError(f"no training videos for subsets {list(t.subsets)}")
    model = build_model(cfg, variant, binary=binary, stepping_stone=stepping_stone).to(device)
    ckpt = out / "checkpoint.pt"
    epoch0, skip, step = 0, 0, 0
    fingerprint = run_fingerprint(cfg, variant_name, task, stepping_stone, ds, captions, stage1_train,
                                  stage1_val)
    state = read_checkpoint(ckpt, set_aside=rank == 0) if ckpt.exists() else None   # read once: it holds the optimizer
    if state is not None and state.get("fingerprint") != fingerprint:
        log.warning("%s was written with other settings or inputs (train/model settings, variant, or "
                    "input shards changed since); training %s from the start", ckpt, variant_name)
        state = None
    phase = state.get("phase", 1) if state is not None else 1
    if t.tune == "adapters":   # at phase 2, the optimizer state to restore is phase 2's
        from ssp.model.adapters import set_phase

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
            best.update(model, epoch0, validate(cfg, manifest, model, variant, binary, device, captions=captions,
                                   stage_dirs=stage_dirs, stage1=stage1_val))
        for epoch in range(epoch0, t.epochs):
            if t.tune == "adapters" and phase == 1 and epoch >= t.lr_decay_epoch:
                phase = 2
                ddp_model, opt, sched = start_phase2(model, best, t, device, epoch, binary=binary, rank=rank,
                                                     world=world, local=local)
            order = epoch_order(len(ds), t.seed, epoch) if t.shuffle else fixed_order(ds.rows)
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
                val = validate(cfg, manifest, model, variant, binary, device, captions=captions,
                                   stage_dirs=stage_dirs, stage1=stage1_val)
                best.update(model, epoch + 1, val)
                logger.epoch(epoch + 1, val)
        final = out / MODEL_FILE
        if rank == 0:
            weights, selected = best.final(model, t.epochs)
            write_trained(final, weights, {"variant": variant_name, "task": task, "stepping_stone": stepping_stone,
                                           "tune": t.tune, "dropped": dropped, "model_config": cfg.raw["model"],
                                           "selected": selected, "models": cfg.model_provenance()})
            log.info("%s: %s holds the weights of epoch %d (%s)", variant_name, final.name, selected["epoch"],
                     selected["by"])
        return final
    finally:
        signal.signal(signal.SIGTERM, old)
        logger.close()


def reduce_mean(x: torch.Tensor, world: int) -> float:
    if world > 1:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= world
    return float(x)

def validation_premask(cfg: Config, variant: Variant, stage1) -> str:
    """The pre-mask's stand-in for M_GT in validation: the one test uses (``train.premask_test``),
    the stage-1 predictions of the val split included; without them (a run started by hand without
    ``--stage1-val``) the flow-only one, said in the log and in metrics.csv (``val_premask``)."""
    if not variant.premask:
        return "not used"
    if cfg.train.premask_test == "stage1" and stage1 is None:
        logs.warn_once(__name__, "validation: no stage-1 predictions of the val split, so the pre-mask's stand-in for M_GT is "
                                 "'flow', where test uses 'stage1'")
        return "flow"
    return cfg.train.premask_test



def validate(cfg: Config, manifest: pd.DataFrame, model: SSPModel, variant: Variant, binary: bool,
             device, *, captions=None, stage1=None, split: str = "val", stage_dirs=None) -> dict:
    """Scores on the split, one video per batch as AVSBench tests: binary mIoU and F-score, or
    (semantic stage 2) AVSS mIoU and F over the split's frames. It reads what test reads
    (``stage1``: the stage-1 predictions of the split): the pre-mask's stand-in for M_GT
    (``validation_premask``) and, in stage 2, the stage-1 masks as the stepping stones, as AAVS's
    evaluation loads them (``avss/avs_model.py`` 34: the saved masks whenever the model is in eval
    mode); without them (a run started by hand), the ground truth's foreground, said in the log
    and in metrics.csv (``val_stones``)."""
    rows = select(manifest, cfg, split)
    if rows.empty:
        return {}
    choice = validation_premask(cfg, variant, stage1)
    stones = "stage1" if stage1 is not None else "ground truth"
    if not binary and stage1 is None:
        logs.warn_once(__name__, "validation: no stage-1 predictions of the val split, so the stepping stones are "
                                 "the ground truth's foreground, where test uses the stage-1 masks")
    ds, _ = make_dataset(cfg, rows, variant, binary=binary, stage1=stage1, captions=captions, stage_dirs=stage_dirs)
    ious, fs, classes = [], [], SemanticAccumulator(cfg.model.num_classes)
    for i in range(len(ds)):
        batch = to_device(collate([ds[i]]), device)
        keep = batch["has_mask"]
        if not binary and stage1 is None:   # stones: the ground truth's foreground (0.5 on unlabeled frames)
            fg = (batch["labels"] > 0).float()
            batch["stones"] = torch.where(keep[:, None, None], fg, torch.full_like(fg, 0.5))
        scores = predict_video(model, batch, choice, out_size=batch["labels"].shape[-1])
        if binary:
            gt = (batch["labels"] > 0)[keep].cpu().numpy()
            ious.append(binary_miou_batch(sounding_share(scores)[keep].cpu().numpy(), gt))
            fs.append(binary_fscore_batch(fscore_map(scores, cfg.evaluate.fscore)[keep].cpu().numpy(), gt))
        else:
            for p, g in zip(scores.argmax(1)[keep].cpu().numpy(), batch["labels"][keep].cpu().numpy()):
                classes.add(p, g)
    model.train()
    if binary:
        return {"val_miou": float(np.mean(ious)), "val_fscore": float(np.mean(fs)), "val_premask": choice,
                "val_fscore_protocol": cfg.evaluate.fscore, "val_videos": len(ds)}
    res = classes.result()
    return {"val_miou": res["miou"], "val_fscore": res["fscore"], "val_premask": choice,
            "val_stones": stones, "val_videos": len(ds)}


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
