"""Data loading: the trainer's HDF5-shard loader against a loader that reads the AVSBench layout
directly (decoding every JPEG/PNG and the wav per sample, as the reference code does), with the
same worker count; and the trainer's step time for comparison. Prints JSON lines.

    .venv/bin/python benchmarks/loader.py [--config config.yaml] [--workers 2] [--epochs 2]

Needs a finished preprocessing run of the config (e.g. after `make demo`).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.io import wavfile
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.audio.vggish import log_mel_examples
from ssp.config import load
from ssp.datasets.manifest import read_manifest
from ssp.engine.data import VideoDataset, collate, loader_collate, unpack_shared
from ssp.io.media import read_mask, resize_image, resize_input
from ssp.layout import RunLayout


class RawLayoutDataset(Dataset):
    """What the reference loaders do per sample: open every frame and mask file and the wav; with
    ``net`` (``input_frames: source``), resize each source frame to the network's size too."""

    def __init__(self, rows, size: int, net: int | None = None):
        self.rows, self.size, self.net = rows.reset_index(drop=True), size, net

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows.iloc[i]
        source = [np.asarray(Image.open(p).convert("RGB")) for p in r.frame_paths]
        frames = np.stack([resize_image(f, self.size) for f in source])
        labels = np.stack([read_mask(p, r.mask_format, self.size, 71) if p else np.zeros((self.size,) * 2, np.uint8)
                           for p in r.mask_paths])
        sr, wav = wavfile.read(r.audio_path)
        mel = log_mel_examples(wav.astype(np.float32) / 32768.0)
        item = {"frames": frames, "labels": labels, "log_mel": mel}
        if self.net:
            item["pixels"] = np.stack([resize_input(f, self.net) for f in source])
        return item


def rate(ds, workers: int, epochs: int, collate_fn, batch: int) -> float:
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_fn,
                        persistent_workers=workers > 0)
    for b in loader:  # warm-up epoch (worker start, page cache)
        unpack_shared(b)
    t = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            unpack_shared(b)   # the batch's arrays, as the trainer's to_device takes them
    return epochs * len(ds) / (time.perf_counter() - t)


def step_time(cfg, ds) -> float:
    from ssp.engine.loop import build_model, model_inputs, to_device
    from ssp.engine.losses import video_losses
    from ssp.variants import VARIANTS

    model = build_model(cfg, VARIANTS["premask_postmask"], binary=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(6):
        batch = to_device(collate([ds[i % len(ds)], ds[(i + 1) % len(ds)]]), "cpu")
        t = time.perf_counter()
        out = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=True, premask_test="flow"))
        loss, _ = video_losses(model, out, batch, binary=True, postmask_weight=10, use_postmask=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, help="videos per batch (default: the config's train.batch_size)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each loader, alternating; medians reported")
    args = ap.parse_args()
    cfg = load(args.config)
    manifest = read_manifest(RunLayout.of(cfg).manifest)
    rows = manifest[manifest["split"] == "train"].reset_index(drop=True)
    net = cfg.model.size if cfg.preprocess.input_frames == "source" else None   # the network's copy, both sides
    shards = VideoDataset(rows, cfg.run_dir, need_flow=True, need_text=False, pixels=net is not None)
    raw = RawLayoutDataset(rows, cfg.preprocess.image_size, net)
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    batch = args.batch or cfg.train.batch_size
    runs = {"hdf5-shards": [], "avsbench-layout-files": []}
    for _ in range(args.repeats):
        runs["hdf5-shards"].append(rate(shards, args.workers, args.epochs, loader_collate(args.workers), batch))
        runs["avsbench-layout-files"].append(rate(raw, args.workers, args.epochs, list, batch))
    r_h5, r_raw = (float(np.median(runs[k])) for k in runs)
    for name, r in (("hdf5-shards", r_h5), ("avsbench-layout-files", r_raw)):
        print(json.dumps({"figure": "loader_videos_per_s", "loader": name, "workers": args.workers, "batch": batch,
                          "videos_per_s": round(r, 2), "runs": [round(x, 1) for x in runs[name]],
                          "videos": len(rows), "network_frames": net, "machine": machine,
                          "date": time.strftime("%Y-%m-%d")}), flush=True)
    print(json.dumps({"figure": "loader_speedup", "value": round(r_h5 / r_raw, 2)}), flush=True)
    st = step_time(cfg, shards)
    print(json.dumps({"figure": "trainer_step", "step_s": round(st, 4), "videos_per_step": 2,
                      "videos_per_s_needed": round(2 / st, 2), "loader_headroom": round(r_h5 / (2 / st), 2),
                      "model": f"config model (size {cfg.model.size})", "machine": machine,
                      "date": time.strftime("%Y-%m-%d")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
