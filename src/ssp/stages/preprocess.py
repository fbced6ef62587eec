"""Preprocessing stages, one shard at a time: frames, audio, ground-truth masks.

Each stage reads the manifest rows of one shard, decodes every video, and writes one HDF5
shard. A video that cannot be decoded becomes a failure record (video, stage, reason) kept in
the shard; the other videos of the shard go on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ssp.config import Config
from ssp.datasets.manifest import read_label2idx, shard_rows
from ssp.io.media import (
    MediaError,
    fit_audio,
    load_frame_files,
    pack_files,
    read_audio,
    read_frame_bytes,
    read_video,
    read_video_masks,
    resize_image,
    resize_input,
    unpack_files,
)
from ssp.io.palette import NUM_CLASSES
from ssp.io.store import ShardWriter, provenance
from ssp.stages import job_config

log = logging.getLogger(__name__)


def _run(stage: str, manifest, shard: str, out: str | Path, cfg: Config, one_video, **extra) -> list:
    """Shared loop: one video at a time, failures recorded, atomic shard write; the shard records
    the stage's settings (``cfg`` is narrowed to the stage)."""
    rows = shard_rows(manifest, shard)
    attrs = provenance(stage, cfg.settings(), dataset=cfg.dataset.name, layout=cfg.dataset.layout, shard=shard,
                       **extra)
    with ShardWriter(out, attrs) as w:
        for row in tqdm(rows.itertuples(index=False), total=len(rows), desc=f"{stage} {shard}"):
            try:
                arrays, vattrs = one_video(row)
            except MediaError as exc:
                log.warning("%s: skipped %s: %s", stage, row.video_id, exc)
                w.fail(row.video_id, stage, str(exc))
                continue
            w.add(row.video_id, arrays, vattrs)
    log.info("%s shard %s: %d written, %d failed -> %s", stage, shard, len(w.written), len(w.failures), out)
    return w.failures


def run_frames(manifest: str | Path | pd.DataFrame, shard: str, out: str | Path, cfg: Config) -> list:
    """Frames [T, S, S, 3] uint8 per video (decoded at 1 fps, or read from the frame files), S =
    ``preprocess.image_size``. With ``preprocess.input_frames: source`` the network reads each frame
    at its input size M = ``model.size``, resized once from the source as AAVS's image processor does
    (``resize_input``); the shard keeps what gives those pixels exactly (``network_frames``),
    chosen by the source's kind and size (no byte count is compared), recorded in the video's ``pixels`` attribute with ``pixels_size`` M:

    * ``frames``: every source frame is S x S, so the stored frames are the source itself;
    * ``source_files``: the frame files' own bytes (``source_bytes``, ``source_offsets``), decoded
      in the loader (AVSBench's JPEGs at another size: a fraction of the decoded M x M frames);
    * ``stored``: ``pixels`` [T, M, M, 3] (frames decoded from a video file, which has no
      per-frame file to keep)."""
    cfg = job_config(cfg, "frames")
    source = cfg.preprocess.input_frames == "source"
    size, net = cfg.preprocess.image_size, cfg.model.size if source else None

    def one(row):
        blobs = None   # the image files' bytes, read once: decoded here, and kept when the shard keeps them
        if row.source == "video":
            raw, n_valid, decoder = read_video(row.video_path, row.n_frames)
        else:
            blobs = read_frame_bytes(row.frame_paths)
            raw, n_valid, decoder = load_frame_files(row.frame_paths, blobs), row.n_frames, "image files"
        arrays = {"frames": np.stack([resize_image(f, size) for f in raw])}
        attrs = {"n_frames": row.n_frames, "n_valid": n_valid, "subset": row.subset, "decoder": decoder}
        if source:
            how, kept = _network_copy(raw, blobs, size, net)
            arrays.update(kept)
            attrs.update(pixels=how, pixels_size=net)
        return arrays, attrs

    return _run("frames", manifest, shard, out, cfg, one)


def _network_copy(raw: list[np.ndarray], blobs: list[bytes] | None, size: int, net: int) -> tuple[str, dict]:
    """How the shard keeps the network's frames (``run_frames``), and the arrays that keeps; ``blobs``:
    the source image files' bytes (None for a video file)."""
    if all(f.shape[:2] == (size, size) for f in raw):
        return "frames", {}
    if blobs is not None:
        data, offsets = pack_files(blobs)
        return "source_files", {"source_bytes": data, "source_offsets": offsets}
    return "stored", {"pixels": np.stack([resize_input(f, net) for f in raw])}


def network_frames(read: dict, attrs: dict) -> np.ndarray:
    """[T, M, M, 3] uint8: the frames as the network reads them with ``input_frames: source`` (each
    source frame resized once to M by ``resize_input``), from a video's frames-shard arrays ``read``
    (what ``network_keys`` names) and its attributes. A shard written before ``pixels`` was an
    attribute holds ``pixels`` itself."""
    how = attrs.get("pixels", "stored")
    if how == "stored":
        return read["pixels"]
    net = int(attrs["pixels_size"])
    source = read["frames"] if how == "frames" else unpack_files(read["source_bytes"], read["source_offsets"])
    return np.stack([resize_input(f, net) for f in source])


def network_keys(attrs: dict) -> tuple[str, ...]:
    """The frames-shard arrays ``network_frames`` reads for a video with these attributes."""
    return {"frames": ("frames",), "source_files": ("source_bytes", "source_offsets")}.get(
        attrs.get("pixels", "stored"), ("pixels",))


def run_audio(manifest: str | Path | pd.DataFrame, shard: str, out: str | Path, cfg: Config) -> list:
    """Waveform [T * sr] float32 per video, 16 kHz mono, trimmed or zero-padded to T seconds."""
    cfg = job_config(cfg, "audio")
    sr = cfg.preprocess.sample_rate

    def one(row):
        if row.source == "frames" and not Path(row.audio_path).is_file():
            raise MediaError(f"{row.audio_path}: audio file is missing")
        wav, decoder = read_audio(row.audio_path, sr)
        wav, n_valid = fit_audio(wav, row.n_frames, sr)
        return {"wav": wav}, {"n_frames": row.n_frames, "n_valid_samples": n_valid,
                              "sample_rate": sr, "subset": row.subset, "decoder": decoder}

    return _run("audio", manifest, shard, out, cfg, one)


def num_classes_of(cfg: Config) -> int:
    if cfg.dataset.layout in ("synthetic", "avsbench_semantic"):
        return len(read_label2idx(cfg.dataset_root))
    return 2 if cfg.dataset.layout.startswith("avsbench_object") else NUM_CLASSES


def run_masks(manifest: str | Path | pd.DataFrame, shard: str, out: str | Path, cfg: Config) -> list:
    """Ground truth as AAVS reads it (``ssp.io.media.read_mask``), both ways, each [T, S, S] uint8:
    ``labels`` (class indices by its AVSS reader, or {0, 1} for binary layouts), what semantic
    tasks train and score on, and ``foreground`` ({0, 1} by its AVS reader), what binary tasks do;
    plus has_mask [T]."""
    cfg = job_config(cfg, "masks")
    size = cfg.preprocess.image_size
    n_cls = num_classes_of(cfg)

    def one(row):
        labels, has = read_video_masks(row.mask_paths, row.mask_format, size, n_cls)
        foreground, _ = read_video_masks(row.mask_paths, row.mask_format, size, n_cls, binary=True)
        return ({"labels": labels, "foreground": foreground, "has_mask": has},
                {"mask_format": row.mask_format, "num_classes": n_cls})

    return _run("masks", manifest, shard, out, cfg, one, num_classes=n_cls)
