"""Building what a training or prediction job runs: the network a config describes, its inputs
for a batch (M_Pre of Eq. 2, the stepping stones, the text tokens), the dataset of a split, and
the optimizer with its autocast and DDP settings."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from ssp.config import Config
from ssp.engine.data import VideoDataset, available_videos, unpack_shared
from ssp.layout import RunLayout
from ssp.model.premask import premask, premask_flow_only, premask_for_test
from ssp.model.ssp import SSPModel
from ssp.variants import Variant

log = logging.getLogger(__name__)


def build_model(cfg: Config, variant: Variant, *, binary: bool, stepping_stone: bool = False,
                tune: str | None = None) -> SSPModel:
    """The network ``cfg``'s model section describes; with ``tune`` (default ``train.tune``)
    ``adapters``, AAVS's adapters inserted and everything but phase 1's parts frozen."""
    from ssp.model.mask2former import build_mask2former

    m, t = cfg.model, cfg.train
    tune = tune or t.tune
    if m.mask2former is None:
        raise ValueError("'model.mask2former' is not set: a local folder with facebook/mask2former-swin-base-"
                         "ade-semantic, or 'random' (built from model.* with random weights)")
    num_labels = 2 if binary else m.num_classes   # binary: AAVS's background and sounding classes
    settings = dict(size=m.size, hidden_dim=m.hidden_dim, encoder_layers=m.encoder_layers,
                    decoder_layers=m.decoder_layers, heads=m.heads, backbone=m.raw["backbone"],
                    swin_drop_path=m.swin_drop_path, class_weight=t.class_weight,
                    matcher_class_cost=t.matcher_class_cost, mask_weight=t.mask_weight, dice_weight=t.dice_weight,
                    no_object_weight=t.no_object_weight, num_points=t.num_points)
    m2f = build_mask2former(m.mask2former, num_labels, num_queries=m.num_queries if binary else m.num_queries_semantic,
                            config=settings, seed=t.seed)
    vta = None
    if variant.text != "none":
        from ssp.model.vta import VTA, build_clip_vision, build_text_encoder

        for key in ("clip", "text_encoder", "tokenizer"):
            if getattr(m, key) is None:
                raise ValueError(f"'model.{key}' is not set (text variant {variant.text!r} needs it): "
                                 "a local folder, or 'random'")
        vta = VTA(mode=variant.text, clip=build_clip_vision(m.clip, m.raw["clip_config"], t.seed),
                  text_encoder=build_text_encoder(m.text_encoder, m.raw["text_config"], t.seed),
                  feature_dim=m2f.config.mask_feature_size)
        positions = vta.text.config.max_position_embeddings
        if variant.text == "vta" and m.max_text_len + vta.visual_tokens > positions:
            raise ValueError(f"'model.max_text_len' {m.max_text_len} + CLIP's {vta.visual_tokens} tokens exceed the text "
                             f"encoder's {positions} positions (VTA's first pass reads both as one sequence, Algorithm 1 "
                             f"line 7): set model.max_text_len to at most {positions - vta.visual_tokens}")
    model = SSPModel(mask2former=m2f, variant=variant, vta=vta, stepping_stone=stepping_stone, size=m.size,
                     premask_image=m.premask_image)
    if tune == "adapters":
        from ssp.model import adapters

        if m.mask2former == "random":
            log.warning("train.tune: adapters with a random-weight Mask2Former: its frozen layers stay random")
        adapters.install(m2f, series=not binary)   # AAVS's AVSS code keeps the projections
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
        else:   # the stage-1 prediction, or given stones (validation: the ground truth's)
            kw["stone"] = batch["stones"].float() if "stones" in batch else batch["stage1"].float()
    if inner.vta is not None:
        kw["text_ids"], kw["text_mask"] = batch["text_ids"].long(), batch["text_mask"].long()
    if "pixels" in batch:
        kw["pixels"] = batch["pixels"]
    return kw


def to_device(batch: dict, device: torch.device | str, *, channels_last: bool = False) -> dict:
    """A ``collate`` batch as tensors on the device: frames [N, 3, S, S] (and their network copy
    ``pixels`` [N, 3, M, M]) floats in [0, 1] (uint8 [N, S, S, 3] on the way; kept in that
    channels-last layout with ``channels_last``), labels int64, the rest as they are."""
    out = {k: torch.as_tensor(v).to(device, non_blocking=True) if isinstance(v, (np.ndarray, torch.Tensor)) else v
           for k, v in unpack_shared(batch).items()}
    for key in ("frames", "pixels") if "pixels" in out else ("frames",):
        x = out[key].permute(0, 3, 1, 2).float().div_(255)
        out[key] = x if channels_last else x.contiguous()
    out["labels"] = out["labels"].long()
    return out


def select(manifest: pd.DataFrame, cfg: Config, split: str) -> pd.DataFrame:
    """The videos of ``split`` in ``train.subsets`` (a folder of videos: all of them, one subset)."""
    subsets = ("videos",) if cfg.dataset.layout == "videos" else cfg.train.subsets
    return manifest[(manifest["split"] == split) & manifest["subset"].isin(subsets)].reset_index(drop=True)


def make_dataset(cfg: Config, manifest: pd.DataFrame, variant: Variant, *, binary: bool, stage1=None, captions=None,
                 stage_dirs=None) -> tuple:
    """(dataset, dropped videos with reasons) of ``manifest``'s rows, read from ``stage_dirs`` (each
    stage's shard folder, as the rule declares them; default: the run layout's), with a binary
    task's ground truth (``binary``) or a semantic one's."""
    dirs = stage_dirs if stage_dirs is not None else RunLayout.of(cfg).run
    stages = ["frames", "masks", "vggish"] + (["flow_mask"] if (variant.premask or variant.postmask) else [])
    rows, dropped = available_videos(manifest, dirs, stages)
    for vid, why in dropped:
        log.warning("training data: skipped %s: %s", vid, why)
    tokenizer = None
    if variant.text != "none":
        from ssp.model.vta import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.tokenizer)
        kept = rows["video_id"].isin(list(captions))
        dropped += [(v, "no captions (see the captions stage)") for v in rows.loc[~kept, "video_id"]]
        rows = rows[kept].reset_index(drop=True)
    ds = VideoDataset(rows, dirs, need_flow=variant.premask or variant.postmask,
                      need_text=variant.text != "none", captions=captions, stage1=stage1, tokenizer=tokenizer,
                      max_text_len=cfg.model.max_text_len,
                      s4_first_frame=cfg.train.s4_train_frames == "first",
                      pixels=cfg.preprocess.input_frames == "source", binary=binary)
    return ds, dropped


def training_setup(model: SSPModel, t, device: torch.device, *, world: int = 1, local: int = 0):
    """(forward module, optimizer, autocast settings) for ``train`` settings ``t``: DDP over several
    processes, channels-last weights, ``torch.compile``, fused AdamW on CUDA and the autocast
    ``train.precision`` asks for (``autocast_settings``)."""
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
    return fwd, opt, autocast_settings(t.precision, device)


def autocast_settings(precision: str, device: torch.device) -> dict:
    """``torch.autocast`` keywords for ``train.precision``: ``bf16``, bf16 autocast on any device (a
    CPU's too); ``auto``, bf16 on CUDA and float32 elsewhere; ``fp32``, none (AAVS's)."""
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
