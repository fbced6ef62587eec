"""The results page at AVSBench's size: bytes, build time and load time in headless Chromium.

Writes the shards a run holds (frames at 224 px, 16 kHz audio, ground truth, M_O) and two
variants' AVSS predictions for ``--videos`` test videos of ``--frames`` frames, with content
from the real clips in ../shared/media (their frames and sound, so JPEG and PNG sizes are those
of real video, not of noise), then builds the page (ssp.reporting.page) and opens its index and
one video's view in Chromium. Prints JSON lines.

    .venv/bin/python benchmarks/page.py [--videos 1500] [--frames 10] [--audio wav|opus] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssp.io.store import ShardedStore, ShardWriter
from ssp.reporting.page import build_page

MEDIA = ROOT.parent / "shared" / "media"
SIZE, RATE = 224, 16000


def clip_material(frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frames [N, 224, 224, 3], mono 16 kHz audio) of each real clip with sound, one frame a second."""
    import av
    from PIL import Image

    out = []
    for path in sorted(MEDIA.glob("*.mp4")) + sorted(MEDIA.glob("*.webm")):
        try:
            with av.open(str(path)) as f:
                if not f.streams.audio:
                    continue
                stream = f.streams.video[0]
                rate = float(stream.average_rate or 25)
                imgs = [np.asarray(fr.to_image().resize((SIZE, SIZE), Image.BILINEAR))
                        for k, fr in enumerate(f.decode(video=0)) if k % max(1, round(rate)) == 0]
            with av.open(str(path)) as f:
                resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
                wav = np.concatenate([r.to_ndarray().ravel() for fr in f.decode(audio=0) for r in resampler.resample(fr)])
        except (av.error.FFmpegError, IndexError):
            continue
        if imgs:
            out.append((np.stack(imgs), wav))
    if not out:
        raise SystemExit(f"no clip with sound in {MEDIA}")
    return out


def blobs(rng, frames: int, n: int) -> np.ndarray:
    """[frames, 224, 224] class indices: ``n`` moving ellipses of random classes (1..70)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((frames, SIZE, SIZE), np.uint8)
    for _ in range(n):
        c = rng.integers(1, 71)
        cy, cx, ry, rx = rng.integers(40, 184), rng.integers(40, 184), rng.integers(15, 50), rng.integers(15, 50)
        dy, dx = rng.integers(-6, 7, 2)
        for t in range(frames):
            out[t][((yy - cy - dy * t) / ry) ** 2 + ((xx - cx - dx * t) / rx) ** 2 < 1] = c
    return out


def build_inputs(work: Path, videos: int, frames: int, shard_size: int) -> dict:
    import h5py
    import pandas as pd

    rng = np.random.default_rng(0)
    material = clip_material(frames)
    rows, writers, current = [], {}, None
    preds = {v: h5py.File(work / f"{v}.h5", "w") for v in ("stage1", "baseline", "full")}
    for i in range(videos):
        vid, shard = f"bench-{i:05d}", f"{i // shard_size:05d}"
        clip, wav = material[i % len(material)]
        start = (i // len(material)) % max(1, len(clip) - frames + 1)
        fr = np.stack([clip[min(start + t, len(clip) - 1)] for t in range(frames)])
        a = np.zeros(frames * RATE, np.float32)
        piece = wav[start * RATE:(start + frames) * RATE]
        a[:len(piece)] = piece
        truth = blobs(rng, frames, int(rng.integers(1, 4)))
        if shard != current:
            for w in writers.values():
                w.__exit__(None, None, None)
            current = shard
            writers = {s: ShardWriter(work / s / f"{shard}.h5", {}).__enter__() for s in ("frames", "audio", "masks", "flow_mask")}
        writers["frames"].add(vid, {"frames": fr})
        writers["audio"].add(vid, {"wav": a}, attrs={"sample_rate": RATE})
        writers["masks"].add(vid, {"labels": truth, "foreground": (truth > 0).astype(np.uint8),
                                   "has_mask": np.ones(frames, bool)})
        writers["flow_mask"].add(vid, {"flow_mask": np.roll(truth > 0, 3, axis=2).astype(np.uint8)})
        for name, flip in (("stage1", 0.1), ("baseline", 0.2), ("full", 0.1)):
            noisy = np.where(rng.random(truth.shape) < flip, np.roll(truth, 5, axis=1), truth)
            g = preds[name].create_group(vid)
            if name == "stage1":
                g["masks"] = (noisy > 0).astype(np.uint8)
            else:
                g["labels"] = noisy
        rows.append({"video_id": vid, "subset": "v2", "split": "test", "n_frames": frames, "shard": shard,
                     "labels": json.dumps(["guitar"])})
    for w in writers.values():
        w.__exit__(None, None, None)
    for f in preds.values():
        f.close()
    manifest = pd.DataFrame(rows)
    manifest["labels"] = manifest["labels"].map(json.loads)
    return {"rows": manifest, **{s: ShardedStore.from_manifest(work / s, manifest)
                                 for s in ("frames", "audio", "masks", "flow_mask")}}


def _kind(f: Path) -> str:
    """What a file of the page is, for its size by kind."""
    if f.suffix in (".wav", ".ogg"):
        return f"audio ({'wav' if f.suffix == '.wav' else 'opus'})"
    if re.fullmatch(r"f\d+\.jpg", f.name):
        return "frames (jpg)"
    if f.name == "thumb.jpg":
        return "thumbnails"
    if f.suffix == ".png":
        return "mask layers (png)"
    if f.parent.name == "data":
        return "index"
    return "video data (js)" if f.name == "data.js" else "page code"


def browse(browser: str, url: str, profile: Path) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=20000", "--dump-dom", url], capture_output=True, text=True, timeout=600)
    return time.perf_counter() - t, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=1500)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--audio", choices=("wav", "opus"), default="wav", help="page.audio")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="page-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    machine = {"machine": platform.node(), "cpus": __import__("os").cpu_count(), "date": time.strftime("%Y-%m-%d")}
    inputs = build_inputs(work, args.videos, args.frames, args.shard_size)
    out = work / "page"
    t = time.perf_counter()
    index = build_page(out, rows=inputs["rows"], frames=inputs["frames"], audio=inputs["audio"], masks=inputs["masks"],
                       flow_masks=inputs["flow_mask"], captions={}, stage1=work / "stage1.h5",
                       predictions={v: work / f"{v}.h5" for v in ("baseline", "full")}, premask_variants=["full"],
                       binary=False, title="benchmark", audio_format=args.audio)
    build = time.perf_counter() - t
    kinds: dict[str, int] = {}
    for f in out.rglob("*"):
        if f.is_file():
            kind = _kind(f)
            kinds[kind] = kinds.get(kind, 0) + f.stat().st_size
    total = sum(kinds.values())
    print(json.dumps({"figure": "page_size", "videos": len(index["videos"]), "frames": args.frames, "audio": args.audio,
                      "bytes": total, "bytes_per_video": round(total / max(1, len(index["videos"]))),
                      "by_kind": kinds, **machine}))
    print(json.dumps({"figure": "page_build", "videos": len(index["videos"]), "seconds": round(build, 1),
                      "seconds_per_video": round(build / max(1, len(index["videos"])), 3), **machine}))
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        print(json.dumps({"figure": "page_load", "skipped": "no headless Chromium installed"}))
        return 0
    blank = work / "blank.html"
    blank.write_text("<html><body></body></html>")
    start, _ = browse(browser, blank.as_uri(), work / "profile")
    wall, dom = browse(browser, (out / "index.html").as_uri(), work / "profile")
    render = re.search(r'data-render-ms="(\d+)"', dom)
    rows = len(re.findall(r"<tr data-video=", dom))
    vid = index["videos"][len(index["videos"]) // 2]["id"]
    vwall, vdom = browse(browser, (out / "index.html").as_uri() + "#video=" + vid, work / "profile")
    vrender = re.search(r'data-render-ms="(\d+)"', vdom)
    print(json.dumps({"figure": "page_load", "videos_listed": rows, "index_render_ms": int(render.group(1)) if render else None,
                      "index_seconds_over_blank_page": round(wall - start, 2),
                      "video_view_ms": int(vrender.group(1)) if vrender else None,
                      "video_view_ready": f'data-ready="video:{vid}"' in vdom,
                      "index_js_bytes": (out / "data" / "index.js").stat().st_size, **machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
