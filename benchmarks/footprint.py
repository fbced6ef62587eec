"""Disk footprint: bytes per video of each stage's shards and of the predictions, as the pipeline
writes them (storage format 2: each array compressed with its codec, the network's frames kept
as the frames or as the source files' bytes) against format 1 (uncompressed, the network's frames
decoded at model.size); each array under every candidate codec, with its read time; and the
projection for S4, MS3 and AVSS at the paper's settings, shards and each study's predictions.
Prints JSON lines.

    .venv/bin/python benchmarks/footprint.py [--predictions results/synthavs/predictions/full/test.h5]
                                             [--max-videos N]

Content: 5-second windows (every 0.5 s) of the real clips in ../shared/media that are long enough
(chaplin.mp4 640x360, video_with_failing_audio.mp4 640x360), sampled at 1 fps as AVSBench samples,
written in the AVSBench-semantic layout (frames as JPEG, quality 95; audio.wav) twice: frames at
224 x 224, and at the clips' own size. The stages run as the DAG runs them (flow by DIS: no
Perceiver IO weights here); the ground truth is each window's flow mask M_O as a class's mask
(real silhouettes of moving things). VGGish features (no weights here) are counted at their
uncompressed size, [T, 128] float32; captions (a few hundred bytes of JSON per video) are not
counted. Predictions: each video of a predictions file (the demo's, at 224 x 224) per frame; an
AVSS prediction (class indices) is counted as that file's argmax masks.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import hdf5plugin
import numpy as np
from PIL import Image
from scipy.io import wavfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.config import Config, read, with_defaults
from ssp.datasets.manifest import build_manifest
from ssp.datasets.synthavs import LABELS
from ssp.io.media import read_audio, resize_image
from ssp.io.palette import colorize
from ssp.io.store import ShardReader, ShardWriter
from ssp.stages.preprocess import network_frames, network_keys, run_audio, run_frames, run_masks
from ssp.variants import study_variants

MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ("chaplin.mp4", "video_with_failing_audio.mp4")   # the clips of 5 s or more, with sound
T, STEP, SR, SIZE, NET = 5, 0.5, 16000, 224, 384
CLASS = LABELS.index("man")
# the paper's settings: videos (and frames each) per setting; predictions on val + test per variant
SETTINGS = {
    "s4": {"videos": {5: 4932}, "scored": {5: 740 + 740}, "task": "binary", "config": "configs/s4.yaml"},
    "ms3": {"videos": {5: 424}, "scored": {5: 64 + 64}, "task": "binary", "config": "configs/ms3.yaml"},
    # AVSS: v1s and v1m (5 frames) and v2 (10 frames); its val + test (1,304 + 1,554) in that mix
    "avss": {"videos": {5: 4932 + 424, 10: 7000}, "scored": {5: 1250, 10: 1608}, "task": "semantic",
             "config": "configs/avss.yaml"},
}
CANDIDATES = {
    "none": lambda: {},
    "gzip4+shuffle": lambda: {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf+shuffle": lambda: {"compression": "lzf", "shuffle": True},
    "zstd3": lambda: dict(hdf5plugin.Zstd(clevel=3)),
    "blosc-zstd5-shuffle": lambda: dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
    "blosc-lz4-shuffle": lambda: dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
}


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def windows() -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    """(name, T frames at the source size, T seconds of 16 kHz audio) of every window: second s of a
    window starting at t0 is the first frame at or after t0 + s + 15/16 s (AVSBench's sample)."""
    import av

    out = []
    for clip in CLIPS:
        path = MEDIA / clip
        with av.open(str(path)) as c:
            decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]
        wav = read_audio(path, SR)[0]
        last = min(decoded[-1][0], len(wav) / SR - 15 / 16)
        k = 0
        while k * STEP + T - 1 + 15 / 16 <= last:
            t0 = k * STEP
            picked = [next(f for t, f in decoded if t >= t0 + s + 15 / 16) for s in range(T)]
            out.append((f"{Path(clip).stem}_{k}", picked, wav[int(t0 * SR):int(t0 * SR) + T * SR]))
            k += 1
    return out


def write_root(root: Path, clips, source_size: int | None) -> None:
    """The windows in the AVSBench-semantic layout (v1m test videos), frames at ``source_size`` or
    their own size; ground truth written later (``write_masks``)."""
    (root / "label2idx.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "label2idx.json").write_text(json.dumps({n: i + 1 for i, n in enumerate(LABELS)}))
    rows = ["vid,uid,s_min,s_sec,a_obj,split,label"]
    for name, frames, wav in clips:
        folder = root / "v1m" / name
        (folder / "frames").mkdir(parents=True)
        for i, f in enumerate(frames):
            img = resize_image(f, source_size) if source_size else f
            Image.fromarray(img).save(folder / "frames" / f"{i}.jpg", quality=95)
        wavfile.write(folder / "audio.wav", SR, (np.clip(wav, -1, 1) * 32767).astype(np.int16))
        rows.append(f"{name},{name},0,0,man,test,v1m")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


def write_masks(root: Path, flow_masks: Path) -> None:
    reader = ShardReader(flow_masks)
    for name in reader.videos():
        m = reader.read(name, ("flow_mask",))["flow_mask"]
        for i, mask in enumerate(m):
            path = root / "v1m" / name / "labels_rgb" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(colorize(mask * CLASS)).save(path)
    reader.close()


def run_stages(root: Path, out: Path) -> dict[str, Path]:
    """Every shard stage of the DAG on the root (flow by DIS), as format 2 writes them."""
    from ssp.stages.flow import run_flow, run_flow_mask

    cfg = Config.from_dict({"results": str(out), "dataset": {"layout": "avsbench_semantic", "root": str(root),
                                                               "splits": ["test"]},
                            "shards": {"size": 1000}, "preprocess": {"image_size": SIZE},
                            "model": {"size": NET}, "flow": {"backend": "dis"}}, models=False)
    df = build_manifest(cfg)
    paths = {s: out / f"{s}.h5" for s in ("frames", "audio", "flow", "flow_mask", "masks")}
    run_frames(df, "00000", paths["frames"], cfg)
    run_audio(df, "00000", paths["audio"], cfg)
    run_flow(df, "00000", paths["frames"], paths["flow"], cfg)
    run_flow_mask(df, "00000", paths["flow"], paths["flow_mask"], cfg)
    write_masks(root, paths["flow_mask"])
    run_masks(df, "00000", paths["masks"], cfg)
    return paths


def as_format1(src: Path, dst: Path) -> Path:
    """A shard rewritten as format 1 wrote it: uncompressed, the network's frames decoded (``pixels``)."""
    reader = ShardReader(src)
    with ShardWriter(dst, reader.attrs(), compress=False) as w:
        for vid in reader.videos():
            arrays, attrs = reader.read(vid), reader.attrs(vid)
            if "pixels" in attrs:
                arrays["pixels"] = network_frames(arrays, attrs)
                for k in ("source_bytes", "source_offsets"):
                    arrays.pop(k, None)
                attrs = {k: v for k, v in attrs.items() if k not in ("pixels", "pixels_size")}
            w.add(vid, arrays, attrs)
    reader.close()
    return dst


def per_array(path: Path) -> dict[str, float]:
    """Mean stored bytes per video of each array of a shard, and ``_file``: the rest of the file."""
    with h5py.File(path, "r") as h5:
        vids = json.loads(h5.attrs["videos"])
        sums: dict[str, float] = {}
        for v in vids:
            for k, d in h5[v].items():
                sums[k] = sums.get(k, 0) + d.id.get_storage_size()
    out = {k: s / len(vids) for k, s in sums.items()}
    out["_file"] = path.stat().st_size / len(vids) - sum(out.values())
    return out


def pixels_modes(path: Path) -> list[str]:
    """How a frames shard keeps the network's frames (its videos' ``pixels`` attributes)."""
    reader = ShardReader(path)
    modes = sorted({reader.attrs(v).get("pixels", "stored") for v in reader.videos()})
    reader.close()
    return modes


def network_read_ms(path: Path, passes: int = 5) -> float:
    """Median over passes of the ms per video to read a frames shard's network input
    (``network_frames``: decompress, decode source files, resize), in this process."""
    reader = ShardReader(path)
    vids = reader.videos()
    attrs = {v: reader.attrs(v) for v in vids}
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for v in vids:
            network_frames(reader.read(v, network_keys(attrs[v])), attrs[v])
        times.append((time.perf_counter() - t) / len(vids) * 1e3)
    reader.close()
    return float(np.median(times))


def codec_table(path: Path, stage: str, keys=None) -> None:
    """Each array of a shard under every candidate codec: ratio to its raw bytes, read ms per video."""
    reader = ShardReader(path)
    vids = reader.videos()
    arrays = {v: reader.read(v) for v in vids}
    for key in keys or sorted(arrays[vids[0]]):
        data = [np.asarray(arrays[v][key]) for v in vids if key in arrays[v]]
        if not data or data[0].dtype.kind not in "biuf" or data[0].ndim == 0:
            continue
        raw = sum(a.nbytes for a in data)
        row = {}
        for name, filt in CANDIDATES.items():
            buf = io.BytesIO()
            with h5py.File(buf, "w") as h5:
                for i, a in enumerate(data):
                    kw = filt()
                    h5.create_dataset(str(i), data=a, chunks=a.shape if kw and a.size else None, **(kw if a.size else {}))
                stored = sum(h5[str(i)].id.get_storage_size() for i in range(len(data)))
                t = time.perf_counter()
                for _ in range(3):
                    for i in range(len(data)):
                        h5[str(i)][()]
                ms = (time.perf_counter() - t) / 3 / len(data) * 1e3
            row[name] = {"ratio": round(raw / max(stored, 1), 2), "read_ms": round(ms, 2)}
        emit(figure="codec", stage=stage, array=key, dtype=str(data[0].dtype), raw_kb_per_video=round(raw / len(data) / 1e3, 1),
             codecs=row)
    reader.close()


def prediction_bytes(path: Path, out: Path) -> dict:
    """Bytes per predicted frame, binary (scores, class_scores, masks) and semantic (class indices),
    in format 1 and 2; from a predictions file's videos."""
    codec_table(path, "predictions")
    reader = ShardReader(path)
    vids = reader.videos()
    frames = sum(len(reader.read(v, ("masks",))["masks"]) for v in vids)
    result = {}
    for fmt, compress in (("format1", False), ("format2", True)):
        for task in ("binary", "semantic"):
            dst = out / f"pred-{task}-{fmt}.h5"
            with ShardWriter(dst, {}, compress=compress) as w:
                for v in vids:
                    a = reader.read(v)
                    w.add(v, a if task == "binary" else {"labels": a["masks"]})
            result[(task, fmt)] = dst.stat().st_size / frames
    reader.close()
    return result


def study_counts(config: str) -> dict[str, int]:
    """Variants (prediction files per split) of each study of a setting's config."""
    raw = with_defaults(read([ROOT / config]))
    ns = SimpleNamespace(train=SimpleNamespace(variants=raw["train"]["variants"]),
                         studies=SimpleNamespace(postmask_weights=raw["studies"]["postmask_weights"],
                                                 q1_variants=raw["studies"]["q1_variants"]))
    return {k: len(v) for k, v in study_variants(ns).items()}


def project(bytes5: dict[str, dict[str, float]], frames_mode: str) -> dict[str, float]:
    """Bytes per video of the shards of a 5-frame and a 10-frame video: each array scaled by its
    rows (T frames, or T - 1 flow pairs); ``frames_mode`` picks the frames shard's measurement."""
    out = {}
    for T_ in (5, 10):
        total = 0.0
        for stage, arrays in bytes5.items():
            if stage.startswith("frames") and stage != frames_mode:
                continue
            for key, b in arrays.items():
                scale = 1.0 if key == "_file" else ((T_ - 1) / (T - 1) if key == "flow" else T_ / T)
                total += b * scale
        total += T_ * 128 * 4 + T_   # VGGish [T, 128] float32 and its valid flags, uncompressed
        out[T_] = total
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", default=str(ROOT / "results/synthavs/predictions/full/test.h5"),
                    help="a binary predictions file (default: the demo's)")
    ap.add_argument("--max-videos", type=int, default=None, help="measure only the first N windows (a smoke run)")
    args = ap.parse_args()
    machine = f"{platform.machine()} CPU"
    clips = windows()[:args.max_videos]
    emit(figure="content", videos=len(clips), frames_per_video=T, clips=list(CLIPS), step_s=STEP, machine=machine,
         date=time.strftime("%Y-%m-%d"))
    measured: dict[str, dict[str, dict[str, float]]] = {"format1": {}, "format2": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, source in (("source224", SIZE), ("source_own", None)):
            write_root(tmp / label / "root", clips, source)
            paths = run_stages(tmp / label / "root", tmp / label / "out")
            stages = ("frames", "audio", "flow", "flow_mask", "masks") if label == "source224" else ("frames",)
            for stage in stages:
                key = stage if stage != "frames" else f"frames_{label}"
                measured["format2"][key] = per_array(paths[stage])
                measured["format1"][key] = per_array(as_format1(paths[stage], tmp / label / f"{stage}-f1.h5"))
                if stage != "frames" or label == "source224":
                    codec_table(paths[stage], stage)
            # the videos layout: frames decoded from video files keep the network's copy, compressed
            f1 = tmp / label / "frames-f1.h5"
            if label == "source_own":
                codec_table(f1, "frames", keys=["pixels"])
                with ShardWriter(tmp / "frames-video.h5", {}) as w:
                    reader = ShardReader(f1)
                    for v in reader.videos():
                        w.add(v, reader.read(v))
                    reader.close()
                measured["format2"]["frames_video"] = per_array(tmp / "frames-video.h5")
            # what the loader pays for the network's frames, per way of keeping them
            for fmt, path in (("format1", f1), ("format2", paths["frames"])):
                emit(figure="network_frames_read_ms_per_video", frames_from=label, format=fmt, pixels=pixels_modes(path),
                     size=NET, ms=round(network_read_ms(path), 2))
            if label == "source_own":
                emit(figure="network_frames_read_ms_per_video", frames_from="video", format="format2",
                     pixels=["stored"], size=NET, ms=round(network_read_ms(tmp / "frames-video.h5"), 2))
        for fmt in measured:
            for stage, arrays in measured[fmt].items():
                emit(figure="bytes_per_video", format=fmt, stage=stage, frames=T,
                     arrays={k: round(v) for k, v in arrays.items()}, total=round(sum(arrays.values())))
        pred = Path(args.predictions)
        preds = prediction_bytes(pred, tmp) if pred.is_file() else None
        if preds is None:
            emit(figure="predictions", skipped=f"{pred} not found (run make demo first)")
        else:
            for (task, fmt), b in preds.items():
                emit(figure="prediction_bytes_per_frame", task=task, format=fmt, bytes=round(b), source=str(pred))
    today = project(measured["format1"], "frames_source224")
    for mode in ("frames_source224", "frames_source_own", "frames_video"):
        now = project(measured["format2"], mode)
        for setting, s in SETTINGS.items():
            before = sum(today[t] * n for t, n in s["videos"].items())
            after = sum(now[t] * n for t, n in s["videos"].items())
            row = {"figure": "projection_shards", "setting": setting, "frames_from": mode,
                   "format1_gb": round(before / 1e9, 1), "format2_gb": round(after / 1e9, 2),
                   "share": round(after / before, 3)}
            if preds is not None:
                frames = sum(t * n for t, n in s["scored"].items())
                counts = study_counts(s["config"])
                per_variant = {fmt: frames * preds[(s["task"], fmt)] for fmt in ("format1", "format2")}
                if setting == "avss":   # its binary stage-1 predictions too
                    stage1 = {fmt: frames * preds[("binary", fmt)] for fmt in per_variant}
                else:
                    stage1 = {fmt: 0.0 for fmt in per_variant}
                row["predictions_gb"] = {study: {fmt: round((n * per_variant[fmt] + stage1[fmt]) / 1e9, 2)
                                                 for fmt in per_variant} for study, n in counts.items()}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
