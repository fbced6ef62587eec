"""The results page: every video of a split with its sound, each variant's masks over its frames,
M_O and the pre-mask, the captions and the per-video scores (docs/outputs.md, "The results page").

A static folder that opens from the file system and inside the Snakemake report (a zip report):
``index.html`` with the page's script and style (``ssp/resources/page/``, shipped with the
package: nothing is fetched at view time), ``data/index.js`` (one row per video), and per video
``v/<id>/``: ``data.js`` (its scores, captions and file names), the frames as JPEG, each mask
layer as a transparent PNG laid over them, the 16 kHz audio the model heard as WAV, a thumbnail,
and for a folder of the user's own videos ``overlay.mp4`` (the masks over the frames with the
clip's sound, H.264 and AAC). Data are JavaScript files the page adds as ``<script>`` elements,
not JSON it fetches: browsers refuse ``fetch`` of ``file://`` URLs. A video's files are loaded
when its view opens; thumbnails when their row scrolls into view.

Scores: for a binary run each video's mIoU and F-score are exactly the terms the task's means
in Table 2 average (``ssp.evaluation.scoring.binary_video``, one video per batch); for AVSS they
are over the classes the video holds (``semantic_video``), a per-video view that the tables,
which pool every frame of the split per class, do not average.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ssp.io.files import write_text
from ssp.io.palette import colorize

log = logging.getLogger(__name__)

THUMB = 96                               # thumbnail width (px)
BINARY_COLOUR = (255, 48, 48)            # a binary mask's one colour
FLOW_COLOUR = (0, 200, 255)              # M_O
ALPHA = 150                              # the masks' opacity over the frame (0-255)
JPEG_QUALITY = 85
ASSETS = ("index.html", "page.js", "page.css")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def folder_name(video_id: str) -> str:
    """A video's folder under ``v/``: its id with anything but letters, digits, ``._-`` escaped
    as ``~xx`` (its UTF-8 bytes; ``~`` itself is escaped), so two ids never share a folder and the
    name is a URL path as it stands (a ``%`` would be decoded by the browser)."""
    return _SAFE.sub(lambda m: "".join(f"~{b:02X}" for b in m.group(0).encode()), video_id)


def overlay_rgba(mask: np.ndarray, colour=None) -> np.ndarray:
    """[H, W] mask -> [H, W, 4] layer: ``colour`` (or the AVSBench palette of class indices) where
    the mask is set, transparent elsewhere. A float mask in [0, 1] (the pre-mask) sets the alpha."""
    h, w = mask.shape
    out = np.zeros((h, w, 4), np.uint8)
    if mask.dtype.kind == "f":
        out[..., :3] = colour or (255, 255, 255)
        out[..., 3] = np.clip(mask, 0, 1) * ALPHA
        return out
    on = mask > 0
    out[..., :3] = colorize(mask.astype(np.uint8)) if colour is None else colour
    out[..., 3] = np.where(on, ALPHA, 0)
    return out


def _png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", optimize=True)


def _jpeg(arr: np.ndarray, path: Path, width: int | None = None) -> None:
    img = Image.fromarray(arr)
    if width is not None and img.width != width:
        img = img.resize((width, round(img.height * width / img.width)), Image.BILINEAR)
    img.save(path, format="JPEG", quality=JPEG_QUALITY)


def write_wav(wav: np.ndarray, rate: int, path: Path) -> None:
    """Float samples in [-1, 1] as 16-bit PCM, mono: the audio stage's waveform as the model heard it."""
    from scipy.io import wavfile

    wavfile.write(path, rate, (np.clip(wav, -1, 1) * 32767).astype(np.int16))


def write_opus(wav: np.ndarray, rate: int, path: Path, bit_rate: int = 32000) -> None:
    """The waveform as Ogg Opus at its own rate (16 kHz is one of Opus's): a tenth of the WAV's size,
    lossy (``page.audio: opus``)."""
    import av

    with av.open(str(path), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        _encode_audio(out, stream, wav, rate, chunk=960, sample_format="flt")


def _encode_audio(out, stream, wav: np.ndarray, rate: int, chunk: int, sample_format: str) -> None:
    """Mono samples in [-1, 1] through an audio stream of ``out``, ``chunk`` samples a frame, then
    the encoder's remaining packets."""
    import av

    samples = np.clip(wav, -1, 1).astype(np.float32)[None]
    for start in range(0, samples.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + chunk]),
                                           format=sample_format, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_overlay_mp4(frames: np.ndarray, layers: np.ndarray, wav: np.ndarray | None, rate: int, path: Path,
                      fps: int = 5) -> None:
    """A shareable clip: each one-second frame with its mask layer ([T, H, W, 4]) blended over it,
    shown for a second (``fps`` copies, H.264 yuv420p), with the clip's audio (AAC) when it has one."""
    import av

    T, H, W = frames.shape[:3]
    h2, w2 = H - H % 2, W - W % 2       # yuv420p needs even sides
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "medium"})
        video.width, video.height, video.pix_fmt = w2, h2, "yuv420p"
        audio = None
        if wav is not None and len(wav):
            audio = out.add_stream("aac", rate=rate, layout="mono")
        for t in range(T):
            a = layers[t, ..., 3:4].astype(np.float32) / 255
            blended = (frames[t].astype(np.float32) * (1 - a) + layers[t, ..., :3].astype(np.float32) * a)
            img = np.ascontiguousarray(blended.round().astype(np.uint8)[:h2, :w2])
            for _ in range(fps):
                for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            _encode_audio(out, audio, wav, rate, chunk=1024, sample_format="fltp")   # AAC's frame size


def _js(name: str, payload) -> str:
    return f"{name}({json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


def _round(x):
    """A score for the page: 4 decimals; None for none (NaN: a video without a frame to score)."""
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def copy_assets(out: Path) -> None:
    src = resources.files("ssp.resources") / "page"
    for name in ASSETS:
        with resources.as_file(src / name) as f:
            shutil.copyfile(f, out / name)


def build_page(out: str | Path, *, rows, frames, audio, masks, flow_masks, captions: dict, predictions: dict,
               stage1=None, premask_test: str = "stage1", premask_variants=(), compare=("full", "baseline"),
               binary: bool = True, fscore: str = "aavs", overlay_variant: str | None = None, title: str = "",
               audio_format: str = "wav", progress: bool = False) -> dict:
    """Write the page for ``rows`` (the manifest's rows of one split) into the folder ``out``.

    ``frames``, ``audio``, ``masks``, ``flow_masks``: stores (``ShardedStore``) of those stages;
    ``masks`` None for a folder of videos without ground truth (no scores, an overlay MP4 per clip
    of ``overlay_variant``). ``predictions``: variant -> predictions file of the split;
    ``stage1``: the stage-1 predictions the pre-mask stands in with at test; ``premask_variants``:
    the variants fed a pre-mask (their view shows it). ``compare``: (a, b), the difference column
    is a minus b. ``audio_format``: ``wav`` (the samples as heard) or ``opus`` (Ogg Opus, lossy,
    a tenth of the size). Returns the index (also written as ``data/index.js``)."""
    import h5py
    import torch
    from tqdm import tqdm

    from ssp.evaluation.scoring import EvaluationError, binary_video, semantic_video
    from ssp.io.store import binary_masks
    from ssp.model.premask import premask_for_test

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    (out / "v").mkdir()
    copy_assets(out)
    variants = list(predictions)
    scored = masks is not None
    a, b = compare if scored and compare[0] in variants and compare[1] in variants else (None, None)
    compare_note = None
    if scored and a is None:
        compare_note = (f"no difference column: page.compare names {' and '.join(compare)}, and this run's variants "
                        f"are {', '.join(variants)}")
        log.warning("results page: %s", compare_note)
    files = {v: h5py.File(p, "r") for v, p in predictions.items()}
    s1 = _Reader(h5py.File(stage1, "r")) if stage1 is not None and premask_variants else None
    index_rows, skipped = [], []
    truth = _Truth(masks) if scored else None
    # the settings the models predicted (S4/MS3 runs predict their subsets' videos only): a video of
    # another is not part of the run's tasks; one of these that no variant predicted is named
    predicted = set(rows.loc[rows["video_id"].map(lambda vid: any(vid in f for f in files.values())), "subset"])
    try:
        for row in tqdm(list(rows.itertuples(index=False)), desc="results page", unit="video", disable=not progress):
            vid = row.video_id
            missing = [v for v in variants if vid not in files[v]]
            if len(missing) == len(variants) and row.subset not in predicted:
                continue
            if missing:
                skipped.append({"video_id": vid, "reason": f"no prediction of {', '.join(missing)}"})
                continue
            if vid not in frames:
                skipped.append({"video_id": vid, "reason": "the frames stage holds no frames of it"})
                continue
            folder = out / "v" / folder_name(vid)
            folder.mkdir()
            fr = frames.read(vid, ("frames",))["frames"]
            T = len(fr)
            for t in range(T):
                _jpeg(fr[t], folder / f"f{t}.jpg")
            _jpeg(fr[T // 2], folder / "thumb.jpg", width=THUMB)
            layers: dict[str, list[str]] = {}
            preds = {}
            for v in variants:
                preds[v] = binary_masks(_Reader(files[v]), vid).astype(np.uint8) if binary else files[v][vid]["labels"][()]
            notes = []   # what this video's view lacks, and why (shown there and logged)
            gt, has = (None, None)
            if scored and truth.holds(vid):
                gt, has = truth.read(vid, binary)
            elif scored:
                notes.append("no ground truth: the masks stage holds none of it (the run summary says why); not scored")
            mo = flow_masks.read(vid, ("flow_mask",))["flow_mask"] if vid in flow_masks else None
            if mo is None:
                notes.append("no M_O: the flow_mask stage holds none of it (the run summary says why)")
            premask = None
            if mo is not None and premask_variants:
                stand_in = torch.from_numpy(binary_masks(s1, vid)) if s1 is not None and vid in s1 else None
                if stand_in is not None or premask_test != "stage1":
                    premask = premask_for_test(torch.from_numpy(mo), stand_in, premask_test).numpy()
                else:
                    notes.append("no pre-mask: the stage-1 predictions it stands in with hold none of it")
            overlay_frames = {}
            for name, arr, colour in [("truth", gt, BINARY_COLOUR if binary else None),
                                      *[(v, preds[v], BINARY_COLOUR if binary else None) for v in variants],
                                      ("M_O", mo, FLOW_COLOUR), ("M_Pre", premask, None)]:
                if arr is None:
                    continue
                names = []
                for t in range(min(T, len(arr))):
                    if name == "truth" and not has[t]:
                        names.append(None)
                        continue
                    layer = overlay_rgba(arr[t] if name != "M_Pre" else arr[t].astype(np.float32), colour)
                    if layer.shape[:2] != fr.shape[1:3]:
                        layer = np.asarray(Image.fromarray(layer).resize(fr.shape[2:0:-1], Image.NEAREST))
                    if name == overlay_variant:
                        overlay_frames[t] = layer
                    f = f"{_SAFE.sub('_', name)}_{t}.png"
                    _png(layer, folder / f)
                    names.append(f)
                layers[name] = names
            au = audio.read(vid) if vid in audio else None
            rate = int(audio.reader(audio.index[vid]).attrs(vid)["sample_rate"]) if au is not None else None
            duration = None
            audio_file = None
            if au is None:
                notes.append("no audio: the audio stage holds none of it (the run summary says why)")
            if au is not None and len(au["wav"]):
                audio_file = "audio.ogg" if audio_format == "opus" else "audio.wav"
                (write_opus if audio_format == "opus" else write_wav)(au["wav"], rate, folder / audio_file)
                duration = len(au["wav"]) / rate
            scores, frame_iou = {}, {}
            if scored and gt is not None:
                for v in variants:   # every variant holds the video (one that does not is left out above)
                    try:
                        one = binary_video(files[v], row, truth, fscore, frame_ious=True) if binary \
                            else semantic_video(files[v], row, truth)
                    except EvaluationError as exc:
                        notes.append(f"{v} not scored: {exc}")
                        continue
                    scores[v] = {"miou": _round(one["miou"]), "fscore": _round(one["fscore"])}
                    frame_iou[v] = [_round(x) for x in one["frame_iou"]]
            if not scored and overlay_variant in variants and overlay_frames:
                stack = np.stack([overlay_frames.get(t, np.zeros(fr.shape[1:3] + (4,), np.uint8)) for t in range(T)])
                write_overlay_mp4(fr, stack, au["wav"] if au is not None else None, rate or 16000,
                                  folder / "overlay.mp4")
            cap = captions.get(vid) or {}
            labels = list(row.labels) if isinstance(row.labels, (list, tuple)) else json.loads(row.labels or "[]")
            diff = None
            if a is not None and a in scores and b in scores and None not in (scores[a]["miou"], scores[b]["miou"]):
                diff = _round(scores[a]["miou"] - scores[b]["miou"])
            index_rows.append({"id": vid, "dir": folder_name(vid), "subset": row.subset, "frames": T,
                               "classes": labels, "scores": scores, "diff": diff})
            write_text(folder / "data.js", _js("SSP.video", {
                "id": vid, "frames": [f"f{t}.jpg" for t in range(T)], "layers": layers,
                "audio": audio_file, "duration": duration,
                "overlay": "overlay.mp4" if (folder / "overlay.mp4").exists() else None,
                "a1": cap.get("a1"), "a2": cap.get("a2"), "nouns": cap.get("nouns"), "q1": cap.get("q1"),
                "caption_status": cap.get("status") if cap else "no captions", "scores": scores,
                "frame_iou": frame_iou, "classes": labels, "subset": row.subset, "notes": notes}))
            for note in notes:
                log.warning("results page: %s: %s", vid, note)
    finally:
        for f in files.values():
            f.close()
        if s1 is not None:
            s1.h5.close()
        if truth is not None:
            truth.close()
    if rows.empty or not index_rows:
        log.warning("results page: no video of this split to show (%d rows, %d left out)", len(rows), len(skipped))
    index = {"title": title, "variants": variants, "compare": [a, b] if a else None, "compare_note": compare_note,
             "scored": scored,
             "binary": binary, "fscore": fscore if binary else "per video, over the classes it holds",
             "videos": index_rows, "skipped": skipped}
    write_text(out / "data" / "index.js", _js("SSP.index", index))
    for s in skipped:
        log.warning("results page: %s left out: %s", s["video_id"], s["reason"])
    log.info("results page: %d videos in %s (%d left out)", len(index_rows), out / "index.html", len(skipped))
    return index


class _Reader:
    """An open predictions file as ``binary_masks`` reads a ``ShardReader``."""

    def __init__(self, h5):
        self.h5 = h5

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.h5

    def read(self, video_id: str, keys=None) -> dict:
        group = self.h5[video_id]
        return {k: group[k][()] for k in (keys or group) if k in group}


class _Truth:
    """The masks store as ``ssp.evaluation.scoring`` reads ground truth (``ShardTruth``'s call)."""

    def __init__(self, store):
        self.store = store

    def holds(self, video_id: str) -> bool:
        return video_id in self.store

    def read(self, video_id: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
        arr = self.store.read(video_id, ["foreground" if binary else "labels", "has_mask"])
        return arr["foreground" if binary else "labels"], arr["has_mask"].astype(bool)

    def __call__(self, row, size: int, binary: bool) -> tuple[np.ndarray, np.ndarray]:
        gt, has = self.read(row.video_id, binary)
        if gt.shape[-1] != size:
            from ssp.evaluation.scoring import EvaluationError

            raise EvaluationError(f"video {row.video_id!r}: ground truth of {gt.shape[-1]} x {gt.shape[-1]}, "
                                  f"predictions of {size} x {size}")
        return gt, has

    def close(self) -> None:
        pass
