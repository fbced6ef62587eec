"""Flow stages over one shard: frames shard -> flow shard -> flow-mask shard, and the figure.

flow shard, per video: ``flow`` float16 [T-1, H, W, 2] (pixels, frame t -> t+1).
flow-mask shard, per video: ``gray`` float16 [T, H, W] (Eq. 1 maps) and ``flow_mask`` uint8
[T, H, W] (M_O). Provenance: backend, its parameters (weights hash for Perceiver IO).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from ssp.config import Config
from ssp.datasets.manifest import shard_rows
from ssp.flow.estimators import make_estimator, video_pairs
from ssp.flow.mask import flow_mask, flow_to_color
from ssp.io.files import atomic_path
from ssp.io.store import ShardReader, ShardWriter, provenance
from ssp.stages import job_config

log = logging.getLogger(__name__)


def _missing_upstream(w: ShardWriter, reader: ShardReader, vid: str, stage: str) -> bool:
    if vid in reader:
        return False
    w.fail(vid, stage, f"no entry in {reader.path.name} of the previous stage (skipped there)")
    return True


def run_flow(manifest: str | Path | pd.DataFrame, shard: str, frames_path: str | Path, out: str | Path,
             cfg: Config, estimator=None) -> list:
    """Flow of the T-1 consecutive frame pairs of every video of the shard.

    Pairs of several videos are sent to the estimator together (``chunk`` pairs at a time), so
    batched backends fill their batches across videos.
    """
    cfg = job_config(cfg, "flow")
    est = estimator or make_estimator(cfg.flow)
    frames = ShardReader(frames_path)
    rows = shard_rows(manifest, shard)
    chunk = max(16, 4 * getattr(est, "batch_size", 4))
    attrs = provenance("flow", cfg.settings(), estimator=json.dumps(est.params(), sort_keys=True),
                       dataset=cfg.dataset.name, shard=shard, models=json.dumps(cfg.model_provenance()))
    with ShardWriter(out, attrs) as w:
        pending: list[tuple[str, np.ndarray]] = []

        def flush():
            if not pending:
                return
            first = np.concatenate([video_pairs(f)[0] for _, f in pending])
            second = np.concatenate([video_pairs(f)[1] for _, f in pending])
            flows = est.pairs(first, second) if len(first) else np.zeros((0,) + first.shape[1:3] + (2,))
            k = 0
            for vid, f in pending:
                n = len(f) - 1
                w.add(vid, {"flow": flows[k:k + n].astype(np.float16)}, {"n_frames": len(f)})
                k += n
            pending.clear()

        for vid in tqdm(rows["video_id"], desc=f"flow {shard}"):
            if _missing_upstream(w, frames, vid, "flow"):
                continue
            f = frames.read(vid, ("frames",))["frames"]
            if not np.isfinite(f).all():
                w.fail(vid, "flow", "frames contain non-finite values")
                continue
            pending.append((vid, f))
            if sum(len(p) - 1 for _, p in pending) >= chunk:
                flush()
        flush()
    log.info("flow shard %s (%s): %d videos -> %s", shard, est.params()["backend"], len(w.written), out)
    return w.failures


def run_flow_mask(manifest: str | Path | pd.DataFrame, shard: str, flow_path: str | Path, out: str | Path,
                  cfg: Config) -> list:
    """Eq. 1 maps and the binary flow mask M_O of every video of the shard."""
    cfg = job_config(cfg, "flow_mask")
    fc = cfg.flow
    flows = ShardReader(flow_path)
    attrs = provenance("flow_mask", cfg.settings(), dataset=cfg.dataset.name, shard=shard,
                       flow_backend=flows.attrs()["params"])
    with ShardWriter(out, attrs) as w:
        for vid in tqdm(shard_rows(manifest, shard)["video_id"], desc=f"flow_mask {shard}"):
            if _missing_upstream(w, flows, vid, "flow_mask"):
                continue
            flow = flows.read(vid)["flow"].astype(np.float32)
            maps, mask = flow_mask(flow, flow.shape[0] + 1, gray=fc.gray, min_magnitude=fc.min_magnitude,
                                   method=fc.binarize, threshold=fc.threshold, min_blob=fc.min_blob)
            w.add(vid, {"gray": maps.astype(np.float16), "flow_mask": mask},
                  {"motion_fraction": float(mask.mean())})
    return w.failures


def figure(videos: list[str], frames: ShardReader, flows: ShardReader, masks: ShardReader,
           out: str | Path, tile: int = 96) -> Path:
    """One PNG: per video, rows frame / flow colour / Eq. 1 map / M_O, one column per frame."""
    blocks = []
    for vid in videos:
        f = frames.read(vid, ("frames",))["frames"]
        fl = flows.read(vid)["flow"].astype(np.float32)
        m = masks.read(vid)
        T = len(f)
        colours = [flow_to_color(fl[min(t, T - 2)]) if T > 1 else np.zeros_like(f[0]) for t in range(T)]
        gray = (np.clip(m["gray"].astype(np.float32), 0, 1) * 255).astype(np.uint8)
        rows = [f, np.stack(colours), np.repeat(gray[..., None], 3, -1),
                np.repeat(m["flow_mask"][..., None] * 255, 3, -1)]
        grid = np.concatenate([np.concatenate([_fit(x, tile) for x in row], 1) for row in rows], 0)
        label = Image.new("RGB", (grid.shape[1], 16), "white")
        ImageDraw.Draw(label).text((2, 2), f"{vid}: frame / flow / Eq.1 map / M_O", fill="black")
        blocks.append(np.concatenate([np.asarray(label), grid], 0))
    width = max(b.shape[1] for b in blocks) if blocks else tile
    sheet = np.concatenate([np.pad(b, ((0, 4), (0, width - b.shape[1]), (0, 0)), constant_values=255)
                            for b in blocks], 0) if blocks else np.full((tile, tile, 3), 255, np.uint8)
    out = Path(out)
    with atomic_path(out, sync=False) as tmp:
        Image.fromarray(sheet.astype(np.uint8)).save(tmp, format="PNG")
    return out


def _fit(img: np.ndarray, tile: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img.astype(np.uint8)).resize((tile, tile), Image.BILINEAR))
