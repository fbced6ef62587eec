"""Score a predictions file against the ground truth, with the AVSBench metrics.

The DAG's ``evaluate`` rule scores against the ``masks`` shards it built (``evaluate_shards``:
the run's manifest picks the task's videos of the split, the shards hold their ground truth as
AAVS reads it). The command line scores against a dataset root's own files:

    python -m ssp evaluate --task {s4,ms3,avss} --root <dataset root> --predictions <file.h5>
                           --split test --out metrics.json [--allow-missing]

The root may be AVSBench-semantic (metadata.csv; s4 = v1s videos, ms3 = v1m, avss = all) or
AVSBench-object (Single-source/ for s4, Multi-sources/ for ms3). Ground truth is read as AAVS
reads it (``ssp.io.media.read_mask``) at the predictions' size (224).

Every number says which protocol it follows (``protocols`` in the output):
  binary  miou                 per-video batches (the reference tests one video per batch)
          fscore               per-video batches, empty frames excluded, empty videos score 0; on
                               AAVS's map sigmoid(2 s_sounding - s_background) (``--fscore aavs``,
                               the default) or on the sounding share (``--fscore avsbench``)
          fscore_per_frame     each frame its own batch (frames with empty truth score 0)
  avss    miou / fscore        all frames as they are, mean over all classes (background included)
          *_padded10           5-frame videos padded to 10 with blank frames whose truth is all
                               background, scored as predicted background (the reference loader)
          *_no_bg_aavs         class 0 (background) left out of the mean (AAVS)
          *_drop_last_avsbench the last class left out of the mean (AVSBench's [:-1])
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from ssp.config import Config
from ssp.datasets.manifest import TASK_SUBSETS, build_manifest, read_manifest
from ssp.evaluation.metrics import SemanticAccumulator, binary_miou_batch, fscore_curves, fscore_of_curves
from ssp.io.files import write_text
from ssp.io.media import read_video_masks
from ssp.io.palette import NUM_CLASSES
from ssp.io.store import ShardReader

log = logging.getLogger(__name__)

SCORE_SIZE = 224   # AVSBench scores masks at 224 x 224; the pipeline predicts at preprocess.image_size (224)
SUBSET_OF_TASK = {"s4": ("v1s", "avsbench_object_s4"), "ms3": ("v1m", "avsbench_object_ms3")}


class EvaluationError(ValueError):
    """Predictions and ground truth do not match; the message names the video."""


def ground_truth_manifest(task: str, root: str | Path, split: str):
    """Manifest rows of the task's videos of the split, read from the root's own layout."""
    root = Path(root)
    if (root / "metadata.csv").is_file():
        subsets = ["v1s", "v1m", "v2"] if task == "avss" else [SUBSET_OF_TASK[task][0]]
        raw = {"dataset": {"layout": "avsbench_semantic", "root": str(root), "subsets": subsets, "splits": [split]}}
    elif task in SUBSET_OF_TASK:
        raw = {"dataset": {"layout": SUBSET_OF_TASK[task][1], "root": str(root), "splits": [split]}}
    else:
        raise EvaluationError(f"{root}: AVSS needs the AVSBench-semantic layout (metadata.csv)")
    return build_manifest(Config.from_dict(raw)).sort_values("video_id").reset_index(drop=True)


def task_rows(manifest, task: str, split: str):
    """The rows of a run's manifest (a CSV path or its frame) that a task scores on a split."""
    rows = read_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    keep = rows["split"] == split
    if task != "avss":
        keep &= rows["subset"].isin(TASK_SUBSETS[task])
    return rows[keep].sort_values("video_id").reset_index(drop=True)


def _files_truth(row, size: int, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """[T, size, size] ground truth of a video read from its files, as AAVS reads it ({0, 1} by its
    AVS reader for binary tasks, class indices by its AVSS reader), and which frames have it."""
    return read_video_masks(row.mask_paths, row.mask_format, size, NUM_CLASSES, binary=binary)


class ShardTruth:
    """Ground truth from the ``masks`` shards (``ssp.stages.preprocess.run_masks``): ``foreground``
    for binary tasks, ``labels`` for semantic ones, and ``has_mask``, each checked against its CRC."""

    def __init__(self, shards: list[str | Path]):
        self.readers = [ShardReader(p) for p in shards]

    def holds(self, video_id: str) -> bool:
        return any(video_id in r for r in self.readers)

    def __call__(self, row, size: int, binary: bool) -> tuple[np.ndarray, np.ndarray]:
        key = "foreground" if binary else "labels"
        for reader in self.readers:
            if row.video_id in reader:
                arr = reader.read(row.video_id, [key, "has_mask"])
                if arr[key].shape[-1] != size:
                    raise EvaluationError(f"{reader.path}: video {row.video_id!r} has ground truth of "
                                          f"{arr[key].shape[-1]} x {arr[key].shape[-1]}, its predictions "
                                          f"{size} x {size} (preprocess.image_size changed since they were made)")
                return arr[key], arr["has_mask"].astype(bool)
        raise EvaluationError(f"video {row.video_id!r}: no masks shard holds its ground truth")

    def close(self) -> None:
        for r in self.readers:
            r.close()


def evaluate_shards(task: str, manifest: str | Path, masks: list[str | Path], predictions: str | Path,
                    split: str = "test", fscore: str = "aavs") -> dict:
    """The task's metrics of a predictions file against the ground truth of the run's ``masks``
    shards: the manifest's videos of the task and split. A video whose ground truth could not be
    read (the masks stage recorded it as failed) is left out, named in the log and in
    ``no_truth`` (the run summary lists why)."""
    rows = task_rows(manifest, task, split)
    if rows.empty:
        raise EvaluationError(f"{manifest}: the manifest holds no {task} {split} video")
    truth = ShardTruth(masks)
    try:
        held = rows["video_id"].map(truth.holds)
        no_truth = sorted(rows.loc[~held, "video_id"])
        if no_truth and len(no_truth) == len(rows):
            raise EvaluationError(f"no masks shard holds the ground truth of any {task} {split} video "
                                  f"({', '.join(no_truth[:5])}): the masks stage failed on them (the run summary "
                                  "says why)")
        if no_truth:
            log.warning("%d %s %s video(s) have no ground truth in the masks shards and are not scored: %s",
                        len(no_truth), task, split, ", ".join(no_truth[:20]))
        result = _score(task, split, rows[held], truth, predictions, allow_missing=False, fscore=fscore)
    finally:
        truth.close()
    result.update(ground_truth="masks shards", no_truth=no_truth)
    return result


def evaluate(task: str, root: str | Path, predictions: str | Path, split: str = "test",
             allow_missing: bool = False, fscore: str = "aavs") -> dict:
    """The task's metrics of a predictions file against the dataset root's own ground truth;
    ``fscore``: the binary F-score's protocol (``aavs`` needs the predictions' ``class_scores``,
    ``avsbench`` reads ``scores``)."""
    result = _score(task, split, ground_truth_manifest(task, root, split), _files_truth, predictions, allow_missing, fscore)
    result.update(root=str(root))
    return result


def _score(task: str, split: str, rows, truth, predictions: str | Path, allow_missing: bool, fscore: str) -> dict:
    binary = task in TASK_SUBSETS
    with h5py.File(predictions, "r") as h5:
        present = [v for v in rows["video_id"] if v in h5]
        missing = [v for v in rows["video_id"] if v not in h5]
        if missing and not allow_missing:
            raise EvaluationError(f"{predictions}: no prediction for video {missing[0]!r} "
                                  f"({len(missing)} missing; --allow-missing scores only the videos present)")
        rows = rows[rows["video_id"].isin(present)]
        if rows.empty:
            raise EvaluationError(f"{predictions}: none of the {task} {split} videos has a prediction")
        first, key = h5[rows["video_id"].iloc[0]], "scores" if binary else "labels"
        size = first[key].shape[-1] if key in first else None   # a missing key: _pred names the video
        if size is not None and size != SCORE_SIZE:
            log.warning("%s: predictions of %d x %d; AVSBench scores at %d x %d, so these metrics (ground truth "
                        "resized to %d) are not comparable with published ones", predictions, size, size,
                        SCORE_SIZE, SCORE_SIZE, size)
        result = _binary(rows, h5, truth, fscore) if binary else _semantic(rows, h5, truth)
        trained = {k: _plain(h5.attrs[k]) for k in ("model_epoch", "model_by") if k in h5.attrs}
    result.update(task=task, split=split, predictions=str(predictions), videos=len(rows),
                  missing_videos=len(missing), missing=missing[:50], size=size, **trained)
    return result


def _plain(value):
    """An HDF5 attribute as JSON takes it (numpy integers are not)."""
    return value.item() if isinstance(value, np.generic) else value


def _pred(h5, vid: str, key: str, T: int) -> np.ndarray:
    if key not in h5[vid]:
        raise EvaluationError(f"video {vid!r}: the predictions hold no {key!r} dataset")
    arr = h5[vid][key][()]
    if arr.shape[0] != T:
        raise EvaluationError(f"video {vid!r}: {arr.shape[0]} predicted frames, the ground truth has {T}")
    return arr


FSCORE_PROTOCOLS = {
    "aavs": "AAVS (Eval_Fmeasure): sigmoid(2 s_sounding - s_background) of the two class scores, beta^2 = 0.3, "
            "255 thresholds, one video per batch, empty frames excluded",
    "avsbench": "AVSBench: the sounding share of the two class scores, beta^2 = 0.3, 255 thresholds, one video "
                "per batch, empty frames excluded",
}


def aavs_fscore_map(class_scores: np.ndarray) -> np.ndarray:
    """[T, 2, H, W] background and sounding scores -> [T, H, W] sigmoid(2 s1 - s0), the map AAVS's
    ``Eval_Fmeasure`` thresholds (``avs/utils/utility.py`` 68-69)."""
    s = class_scores.astype(np.float32)
    return 1 / (1 + np.exp(-(2 * s[:, 1] - s[:, 0])))


def _fscore_map(h5, row, protocol: str, scores: np.ndarray) -> np.ndarray:
    if protocol == "avsbench":
        return scores
    if "class_scores" not in h5[row.video_id]:
        raise EvaluationError(f"video {row.video_id!r}: the AAVS F-score needs the predictions' 'class_scores' "
                              "(background and sounding); score these with --fscore avsbench (the 'scores' map)")
    return aavs_fscore_map(_pred(h5, row.video_id, "class_scores", row.n_frames))


def binary_video(h5, row, truth, protocol: str = "aavs", frame_ious: bool = False) -> dict:
    """One video's binary scores as the task's means take them (one video per batch): its mIoU and
    F-score over its frames with ground truth, each such frame's F-score as its own batch, and
    (``frame_ious``) each of its T frames' IoU, None where the frame has no ground truth."""
    scores = _pred(h5, row.video_id, "scores", row.n_frames).astype(np.float32)
    gt, has = truth(row, scores.shape[-1], binary=True)
    s, f, g = scores[has], _fscore_map(h5, row, protocol, scores)[has], gt[has]
    curves = fscore_curves(f, g)              # [frames with a non-empty truth, 255]
    rest = iter(curves)                       # each frame its own batch; an empty truth scores 0
    out = {"miou": binary_miou_batch(s, g), "fscore": fscore_of_curves(curves), "frames": len(s),
           "fscore_frames": [fscore_of_curves(next(rest)[None]) if g_t.any() else 0.0 for g_t in g]}
    if frame_ious:
        out["frame_iou"] = [binary_miou_batch(scores[t:t + 1], gt[t:t + 1]) if has[t] else None
                            for t in range(len(scores))]
    return out


def semantic_video(h5, row, truth) -> dict:
    """One video's AVSS scores for a page of videos (not a protocol of the tables, which pool every
    frame of the split per class): mIoU and F-score over the classes its truth or prediction holds,
    and each of its T frames' mIoU over the classes that frame holds (None without ground truth)."""
    labels = _pred(h5, row.video_id, "labels", row.n_frames)
    gt, has = truth(row, labels.shape[-1], binary=False)
    video, frame_iou = SemanticAccumulator(NUM_CLASSES), []
    for t in range(len(labels)):
        if not has[t]:
            frame_iou.append(None)
            continue
        video.add(labels[t], gt[t])
        one = SemanticAccumulator(NUM_CLASSES)
        one.add(labels[t], gt[t])
        frame_iou.append(_present(one)[0])
    miou, fscore = _present(video)
    return {"miou": miou, "fscore": fscore, "frames": int(has.sum()), "frame_iou": frame_iou}


def _present(acc: SemanticAccumulator) -> tuple[float | None, float | None]:
    """mIoU and F-score over the classes an accumulator has seen (in truth or prediction)."""
    seen = acc.count > 0
    if not seen.any():
        return None, None
    return float((acc.iou[seen] / acc.count[seen]).mean()), float((acc.f[seen] / acc.count[seen]).mean())


def _binary(rows, h5, truth, protocol: str = "aavs") -> dict:
    ious, fs, fs_frame, frames = [], [], [], 0
    for row in rows.itertuples(index=False):
        one = binary_video(h5, row, truth, protocol)
        ious.append(one["miou"])
        fs.append(one["fscore"])
        fs_frame += one["fscore_frames"]
        frames += one["frames"]
    return {"miou": float(np.mean(ious)), "fscore": float(np.mean(fs)), "fscore_per_frame": float(np.mean(fs_frame)),
            "frames": frames, "fscore_protocol": protocol,
            "protocols": {"miou": "AVSBench, one video per batch, empty truth: IoU of the background",
                          "fscore": FSCORE_PROTOCOLS[protocol],
                          "fscore_per_frame": "as fscore, each frame its own batch"}}


def _semantic(rows, h5, truth) -> dict:
    plain, padded = SemanticAccumulator(NUM_CLASSES), SemanticAccumulator(NUM_CLASSES)
    frames = 0
    for row in rows.itertuples(index=False):
        labels = _pred(h5, row.video_id, "labels", row.n_frames)
        gt, has = truth(row, labels.shape[-1], binary=False)
        for p, g in zip(labels[has], gt[has]):
            plain.add(p, g)
            padded.add(p, g)
            frames += 1
        if row.n_frames == 5:  # the reference loader pads 5-frame videos to 10 with blank frames
            blank = np.zeros_like(labels[0])
            for _ in range(5):
                padded.add(blank, blank)
    r, rp = plain.result(), padded.result()
    return {"miou": r["miou"], "fscore": r["fscore"], "frames": frames,
            "miou_padded10": rp["miou"], "fscore_padded10": rp["fscore"],
            "miou_no_bg_aavs": plain.result(exclude=0)["miou"], "fscore_no_bg_aavs": plain.result(exclude=0)["fscore"],
            "miou_drop_last_avsbench": plain.result(exclude=NUM_CLASSES - 1)["miou"],
            "fscore_drop_last_avsbench": plain.result(exclude=NUM_CLASSES - 1)["fscore"],
            "per_class_miou": r["per_class_miou"], "per_class_fscore": r["per_class_fscore"],
            "protocols": {"miou": "AVSBench semantic: per-class sums over all frames, mean over all 71 classes",
                          "miou_padded10": "as miou, 5-frame videos padded to 10 with blank all-background frames",
                          "miou_no_bg_aavs": "as miou, background (class 0) left out (AAVS)",
                          "miou_drop_last_avsbench": "as miou, the last class left out (AVSBench's [:-1])"}}


def write(result: dict, out: str | Path) -> None:
    write_text(out, json.dumps(result, indent=1))
