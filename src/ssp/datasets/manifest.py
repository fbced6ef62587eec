"""Dataset readers: every supported on-disk layout becomes one manifest table.

Manifest columns (one row per video):
  video_id    AVSBench `uid` (semantic), the video name (object S4/MS3) or the file stem (videos)
  layout      config layout name
  subset      v1s / v1m / v2 (semantic, synthetic), s4 / ms3 (object), videos
  split       train / val / test
  n_frames    T, the number of one-second steps
  source      "frames" (image files per step) or "video" (decode a video file)
  video_path  the video file (source == video), else ""
  frame_paths JSON list of T image paths (source == frames), else []
  mask_paths  JSON list of T paths or null where the layout has no mask for that frame
  mask_format "rgb" (AVSBench palette), "binary" (0/255 grey) or "none"
  audio_path  the wav file, or the video file whose audio stream is decoded
  labels      JSON list of class names named by the metadata (may be empty)
  shard       shard name, assigned by ``assign_shards``

The layouts are described in ../shared/AVSBENCH.md and docs/datasets.md. Readers only build paths
by the layout's rules; missing files are reported by the stage that opens them. A video whose id
cannot name a folder or an HDF5 group (``.``, ``..``, a path separator, a control character), or,
in the ``videos`` layout, whose file is not a regular file (a FIFO would hang the decoder), is
refused: left out of the manifest and listed with its reason (``refused_path``, then the run's
skipped.csv).
"""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pandas as pd

from ssp.config import Config
from ssp.datasets import INDEX_FILES
from ssp.io.files import atomic_path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
COLUMNS = ["video_id", "layout", "subset", "split", "n_frames", "source", "video_path",
           "frame_paths", "mask_paths", "mask_format", "audio_path", "labels"]
LIST_COLUMNS = ("frame_paths", "mask_paths", "labels")  # stored as JSON in the CSV
SEMANTIC_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}
# the tasks a run is scored on: each binary task's manifest subsets (AVSBench-semantic's and
# AVSBench-object's names); avss scores every video
TASK_SUBSETS = {"s4": ("v1s", "s4"), "ms3": ("v1m", "ms3")}
TASKS = (*TASK_SUBSETS, "avss")


class DatasetError(ValueError):
    """The dataset on disk does not match its declared layout; the message names the file."""


def _row(**kw) -> dict:
    kw.setdefault("video_path", "")
    kw.setdefault("frame_paths", [])
    kw.setdefault("labels", [])
    return kw


def _read_csv(path: Path, required: list[str] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"metadata file {str(path)!r} does not exist")
    df = pd.read_csv(path, sep=",", dtype=str, keep_default_na=False)
    missing = [c for c in (required or []) if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def read_label2idx(root: Path) -> dict[str, int]:
    path = Path(root) / INDEX_FILES["avsbench_semantic"][1]
    if not path.is_file():
        raise DatasetError(f"label file {str(path)!r} does not exist")
    return json.loads(path.read_text())


def read_avsbench_semantic(root: Path, subsets, splits, layout: str = "avsbench_semantic") -> list[dict]:
    """<root>/metadata.csv + <root>/<label>/<uid>/{frames,labels_rgb}/<i>.* + audio.wav."""
    root = Path(root)
    df = _read_csv(root / INDEX_FILES["avsbench_semantic"][0], ["vid", "uid", "split", "label", "a_obj"])
    read_label2idx(root)  # fail early if the class table is missing
    rows = []
    for r in df.itertuples(index=False):
        if r.label not in subsets or r.split not in splits:
            continue
        T = SEMANTIC_FRAMES[r.label]
        vdir = root / r.label / r.uid
        one_mask = r.label == "v1s" and r.split == "train"
        rows.append(_row(
            video_id=r.uid, layout=layout, subset=r.label, split=r.split, n_frames=T,
            source="frames",
            frame_paths=[str(vdir / "frames" / f"{i}.jpg") for i in range(T)],
            mask_paths=[str(vdir / "labels_rgb" / f"{i}.png") if (i == 0 or not one_mask) else None
                        for i in range(T)],
            mask_format="rgb", audio_path=str(vdir / "audio.wav"),
            labels=[a for a in r.a_obj.split("_") if a] if r.a_obj else []))
    return rows


def read_avsbench_object_s4(root: Path, splits) -> list[dict]:
    """Single-source/s4_meta_data.csv (name, start, category, split by position) + s4_data/."""
    base = Path(root) / "Single-source"
    df = _read_csv(Path(root) / INDEX_FILES["avsbench_object_s4"][0])
    if df.shape[1] < 4:
        raise DatasetError(f"{base / 's4_meta_data.csv'}: expected 4 columns (name, start, category, split)")
    data = base / "s4_data"
    rows = []
    for values in df.itertuples(index=False):
        name, category, split = values[0], values[2], values[3]  # values[1]: start time
        if split not in splits:
            continue
        fdir = data / "visual_frames" / split / category / name
        mdir = data / "gt_masks" / split / category / name
        rows.append(_row(
            video_id=name, layout="avsbench_object_s4", subset="s4", split=split, n_frames=5,
            source="frames", frame_paths=[str(fdir / f"{name}_{k}.png") for k in range(1, 6)],
            mask_paths=[str(mdir / f"{name}_{k}.png") if (k == 1 or split != "train") else None
                        for k in range(1, 6)],
            mask_format="binary", audio_path=str(data / "audio_wav" / split / category / f"{name}.wav"),
            labels=[category]))
    return rows


def read_avsbench_object_ms3(root: Path, splits) -> list[dict]:
    """Multi-sources/ms3_meta_data.csv (name, split by position) + ms3_data/."""
    base = Path(root) / "Multi-sources"
    df = _read_csv(Path(root) / INDEX_FILES["avsbench_object_ms3"][0])
    if df.shape[1] < 2:
        raise DatasetError(f"{base / 'ms3_meta_data.csv'}: expected 2 columns (name, split)")
    data = base / "ms3_data"
    rows = []
    for values in df.itertuples(index=False):
        name, split = values[0], values[1]
        if split not in splits:
            continue
        fdir = data / "visual_frames" / name
        mdir = data / "gt_masks" / split / name
        rows.append(_row(
            video_id=name, layout="avsbench_object_ms3", subset="ms3", split=split, n_frames=5,
            source="frames", frame_paths=[str(fdir / f"{name}.mp4_{k}.png") for k in range(1, 6)],
            mask_paths=[str(mdir / f"{name}_{k}.png") for k in range(1, 6)],
            mask_format="binary", audio_path=str(data / "audio_wav" / split / f"{name}.wav")))
    return rows


def id_problem(video_id: str) -> str | None:
    """Why a video id cannot name a video's folder (PNG masks), HDF5 group and file names, or None."""
    if video_id in ("", ".", ".."):
        return f"its video id {video_id!r} names no folder of its own (the file name before the extension)"
    if any(c in video_id for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in video_id):
        return f"its video id {video_id!r} holds a path separator or a control character"
    return None


def file_problem(path: Path) -> str | None:
    """Why a video file cannot be read as one (a FIFO, a device, a folder), or None; a missing file
    is the decoding stage's to report."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file (a folder, a FIFO or a device)"
    return None


def video_files(root: Path) -> list[Path]:
    """The video files of a ``videos`` folder (by extension), sorted: the listing that decides
    whether the manifest is rebuilt."""
    return sorted(p for p in Path(root).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)


def read_video_folder(root: Path, T: int, videos_csv: str | None, splits, refused: list | None = None) -> list[dict]:
    """A plain folder of video files; an optional CSV (video, split) assigns splits. Files that
    cannot be a video (``file_problem``) are appended to ``refused`` as (video id, reason)."""
    root = Path(root)
    if videos_csv:
        df = _read_csv(Path(videos_csv), ["video", "split"])
        pairs = [(root / v, s) for v, s in zip(df["video"], df["split"])]
    else:
        pairs = [(p, "test") for p in video_files(root)]
    rows = []
    for path, split in pairs:
        if split not in splits:
            continue
        problem = file_problem(path)
        if problem:
            (refused if refused is not None else []).append((path.stem, problem))
            continue
        rows.append(_row(
            video_id=path.stem, layout="videos", subset="videos", split=split, n_frames=T,
            source="video", video_path=str(path), mask_paths=[None] * T, mask_format="none",
            audio_path=str(path)))
    return rows


def build_manifest(cfg: Config, refused: list | None = None) -> pd.DataFrame:
    """Read the configured dataset into a sorted manifest with shards assigned. Videos refused
    (``id_problem``, ``file_problem``) are left out, logged, and appended to ``refused`` as
    (video id, reason)."""
    ds = cfg.dataset
    root = cfg.dataset_root
    refused = [] if refused is None else refused
    if ds.layout in ("synthetic", "avsbench_semantic"):
        rows = read_avsbench_semantic(root, ds.subsets, ds.splits, ds.layout)
    elif ds.layout == "avsbench_object_s4":
        rows = read_avsbench_object_s4(root, ds.splits)
    elif ds.layout == "avsbench_object_ms3":
        rows = read_avsbench_object_ms3(root, ds.splits)
    else:
        rows = read_video_folder(root, ds.frames_per_video, ds.videos_csv, ds.splits, refused)
    kept = []
    for row in rows:
        problem = id_problem(row["video_id"])
        if problem:
            refused.append((row["video_id"], f"{row['video_path'] or row['audio_path']}: {problem}"))
        else:
            kept.append(row)
    for vid, reason in refused:
        log.warning("manifest: refused %r: %s", vid, reason)
    df = pd.DataFrame(kept, columns=COLUMNS)
    dup = df["video_id"][df["video_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"duplicate video id(s) in {root}: {sorted(set(dup))[:5]}")
    df = df.sort_values(["subset", "split", "video_id"], kind="stable").reset_index(drop=True)
    if ds.limit:
        df = df.iloc[: ds.limit].reset_index(drop=True)
    if df.empty:
        raise DatasetError(f"no videos found in {root} for subsets {list(ds.subsets)} and splits {list(ds.splits)}")
    return assign_shards(df, cfg.shards.size)


def shard_name(i: int) -> str:
    return f"{i:05d}"


def assign_shards(df: pd.DataFrame, size: int) -> pd.DataFrame:
    """Deterministic: the i-th video of the (sorted) manifest goes to shard i // size."""
    df = df.copy()
    df["shard"] = [shard_name(i // size) for i in range(len(df))]
    return df


def refused_path(manifest: str | Path) -> Path:
    """The CSV beside a manifest that lists the videos it refused (video_id, stage, reason)."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".refused.csv")


def write_refused(refused: list, manifest: str | Path) -> None:
    df = pd.DataFrame([(v, "manifest", r) for v, r in refused], columns=["video_id", "stage", "reason"])
    with atomic_path(refused_path(manifest)) as tmp:
        df.to_csv(tmp, index=False)


def read_refused(manifest: str | Path) -> list[dict]:
    """The videos a manifest refused, as skipped.csv rows ([] when it has no such file)."""
    path = refused_path(manifest)
    if not path.is_file():
        return []
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [dict(video_id=r.video_id, stage=r.stage, reason=r.reason, shard="") for r in df.itertuples()]


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    out = df.copy()
    for key in LIST_COLUMNS:
        out[key] = out[key].map(json.dumps)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)


def shard_rows(manifest: str | Path | pd.DataFrame, shard: str) -> pd.DataFrame:
    """The rows of one shard, from a manifest file or its frame (what every shard stage reads)."""
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    rows = manifest[manifest["shard"] == shard]
    if rows.empty:
        raise ValueError(f"shard {shard!r} is not in the manifest")
    return rows


def read_manifest(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"shard": str, "video_id": str}, keep_default_na=False)
    for key in LIST_COLUMNS:
        df[key] = df[key].map(json.loads)
    return df


def shards_of(df: pd.DataFrame) -> list[str]:
    return sorted(df["shard"].unique())
