"""Training data: one video per item, read from the HDF5 shards through the manifest.

An item holds the video's frames, ground truth, flow mask M_O, VGGish features and captions
(only what the variant needs is read: with text off no caption is touched, with pre-mask and
post-mask off no flow mask). ``collate`` flattens the frames of a batch of videos into one
frame batch and remembers which video each frame came from.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from ssp.io import logs, shm
from ssp.io.store import ShardedStore, ShardReader, binary_masks
from ssp.stages.preprocess import network_frames, network_keys

S4_SUBSETS = ("v1s", "s4")
log = logging.getLogger(__name__)




class VideoDataset(Dataset):
    def __init__(self, manifest: pd.DataFrame, dirs: str | Path | Mapping[str, str | Path], *, need_flow: bool,
                 need_text: bool, captions: dict[str, dict] | None = None, stage1: str | Path | None = None,
                 tokenizer=None, max_text_len: int = 32, s4_first_frame: bool = False, pixels: bool = False,
                 binary: bool = False):
        """``dirs``: each stage's shard folder (``layout.stage_dirs`` of a rule's inputs), or a run
        folder holding them all. ``s4_first_frame``: an S4 training video is its first frame T times,
        each copy with its own second of audio, all supervised by the first frame's mask, as AAVS's
        v1s training set is (``_idx = 0`` for the v1s train split, ``avs/dataset.py`` 143-145,
        174-186; S4 train videos have ground truth on the first frame only). ``pixels``: read the
        frames' network copy too (``preprocess.input_frames: source``). ``binary``: the ground truth of
        a binary task, the masks shards' ``foreground`` (AAVS's AVS reader), as ``labels``; else
        their ``labels`` (class indices)."""
        self.s4_first_frame, self.pixels, self.binary = s4_first_frame, pixels, binary
        folder = stage_folders(dirs)
        self.rows = manifest.reset_index(drop=True)
        self.stores = {s: ShardedStore.from_manifest(folder(s), manifest) for s in ("frames", "masks", "vggish")}
        if need_flow:
            self.stores["flow_mask"] = ShardedStore.from_manifest(folder("flow_mask"), manifest)
        self.need_text, self.captions, self.tokenizer, self.max_len = need_text, captions, tokenizer, max_text_len
        if need_text and (captions is None or tokenizer is None):
            raise ValueError("text prompts need captions and a tokenizer")
        self.stage1 = None
        if stage1 is not None:
            self.stage1 = ShardReader(stage1)

    def __len__(self) -> int:
        return len(self.rows)

    def _pixels(self, vid: str, frames: np.ndarray) -> np.ndarray:
        """The frames at the network's size, each resized once from its source (``network_frames``:
        from the stored frames, the source files' bytes, or the stored copy, as the shard says)."""
        store = self.stores["frames"]
        attrs = store.attrs(vid)
        keys = [k for k in network_keys(attrs) if k != "frames"]
        try:
            read = dict(store.read(vid, keys), frames=frames)
        except KeyError:
            shard = store.reader(store.index[vid]).path
            raise KeyError(f"{shard} holds no 'pixels' for video {vid!r} (the frames at the network's size): it "
                           "was written with preprocess.input_frames: stored; re-run the frames stage, or set "
                           "input_frames: stored") from None
        return network_frames(read, attrs)

    def _truth(self, vid: str) -> dict:
        """``labels`` (the task's ground truth) and ``has_mask`` of a video."""
        store = self.stores["masks"]
        if not self.binary:
            return store.read(vid, ("labels", "has_mask"))
        try:
            read = store.read(vid, ("foreground", "has_mask"))
        except KeyError:   # a shard written before the masks stage stored it
            logs.warn_once(__name__, f"{store.reader(store.index[vid]).path} holds no 'foreground' (AAVS's binary "
                                     "ground truth): its labels > 0 stand in; re-run the masks stage "
                                     "(snakemake --forcerun preprocess) for AAVS's reading")
            read = store.read(vid, ("labels", "has_mask"))
            read["labels"] = (read["labels"] > 0).astype(np.uint8)
            return read
        return {"labels": read["foreground"], "has_mask": read["has_mask"]}

    def _is_s4_train(self, i: int) -> bool:
        row = self.rows.iloc[i]
        return row.get("split") == "train" and row.get("subset") in S4_SUBSETS

    def _tokens(self, text: str, video_id: str = "", which: str = "") -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(text, max_length=self.max_len, truncation=True, padding="max_length")
        if enc["attention_mask"][-1] and len(self.tokenizer(text)["input_ids"]) > self.max_len:
            logs.warn_once(__name__, f"{video_id}: {which} is longer than model.max_text_len "
                                     f"({self.max_len} tokens) and was cut")
        return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])

    def __getitem__(self, i: int) -> dict:
        vid = self.rows.at[i, "video_id"]
        frames = self.stores["frames"].read(vid, ("frames",))["frames"]
        masks = self._truth(vid)
        T = len(frames)
        item = {"video_id": vid, "subset": self.rows.at[i, "subset"] if "subset" in self.rows else "",
                "frames": frames, "labels": masks["labels"], "has_mask": masks["has_mask"],
                "vggish": self.stores["vggish"].read(vid, ("vggish",))["vggish"]}
        if self.pixels:
            item["pixels"] = self._pixels(vid, frames)
        if "flow_mask" in self.stores:   # not its gray maps (the flow figure's), twice its size
            item["flow_mask"] = self.stores["flow_mask"].read(vid, ("flow_mask",))["flow_mask"]
        if self.stage1 is not None:
            item["stage1"] = binary_masks(self.stage1, vid)   # 0 or 1, as AAVS's saved stage-1 masks
        if self.s4_first_frame and self._is_s4_train(i):
            for key in ("frames", "pixels", "labels", "has_mask", "flow_mask", "stage1"):   # not the audio
                if key in item:
                    item[key] = np.repeat(item[key][:1], T, axis=0)
        if self.need_text:
            cap = self.captions.get(vid)
            if cap is None:
                raise KeyError(f"no captions for video {vid!r} (see the captions stage's failures)")
            ids1, m1 = self._tokens(cap["a1"], vid, "A1")
            ids2, m2 = self._tokens(cap["a2"], vid, "A2")
            item["text_ids"] = np.tile(np.concatenate([ids1, ids2]), (T, 1))
            item["text_mask"] = np.tile(np.concatenate([m1, m2]), (T, 1))
        return item


def stage_folders(dirs: str | Path | Mapping[str, str | Path]):
    """stage -> its shard folder, from a mapping of stage folders or from a run folder."""
    if isinstance(dirs, Mapping):
        def folder(stage):
            if stage not in dirs:
                raise ValueError(f"no {stage} shards were given (inputs hold {', '.join(sorted(dirs))})")
            return Path(dirs[stage])
        return folder
    return lambda stage: Path(dirs) / stage


def available_videos(manifest: pd.DataFrame, dirs: str | Path | Mapping[str, str | Path],
                     stages: list[str]) -> tuple[pd.DataFrame, list]:
    """Videos present in every needed stage's shards, and (video, reason) for the rest."""
    folder = stage_folders(dirs)
    keep, dropped = [], []
    stores = {s: ShardedStore.from_manifest(folder(s), manifest) for s in stages}
    for vid in manifest["video_id"]:
        missing = [s for s, st in stores.items() if vid not in st]
        if missing:
            dropped.append((vid, f"missing from the {', '.join(missing)} shards (skipped there)"))
        else:
            keep.append(vid)
    return manifest[manifest["video_id"].isin(keep)].reset_index(drop=True), dropped


def collate(items: list[dict]) -> dict:
    """A batch of videos -> one batch of frames (N = sum of T) with per-frame video index.

    The batch is numpy arrays, as stored: frames uint8 [N, S, S, 3], labels uint8 [N, S, S].
    ``ssp.engine.loop.to_device`` makes them tensors on the device: frames floats [N, 3, S, S] in [0, 1],
    labels int64 (uint8 is 4x / 8x fewer bytes than float / int64). DataLoader workers use
    ``collate_shared``, which puts all of them into one shared-memory buffer.
    """
    out = {"video_ids": [it["video_id"] for it in items], "subsets": [it.get("subset", "") for it in items]}
    out.update({key: np.concatenate(parts) for key, parts in _parts(items).items()})
    return out


def _parts(items: list[dict]) -> dict[str, list[np.ndarray]]:
    """Each batch array's pieces, one per video, in the order ``collate`` joins them."""
    parts = {"video_index": [np.full(len(it["frames"]), k, np.int64) for k, it in enumerate(items)]}
    for key in ("frames", "pixels", "labels", "has_mask", "vggish", "flow_mask", "stage1", "text_ids", "text_mask"):
        if key in items[0]:
            parts[key] = [it[key] for it in items]
    return parts


def collate_shared(items: list[dict]) -> dict:
    """``collate`` for DataLoader workers: every array of the batch in one shared-memory buffer.

    A worker's batch then crosses to the main process as the identity of a shared-memory segment
    that the worker reuses (``ssp.io.shm``), instead of each array pickled through a pipe or a fresh
    segment per batch. ``unpack_shared`` turns it back into the arrays (views, no copy).
    """
    parts = _parts(items)
    layout, offset = [], 0
    for key, pieces in parts.items():
        dtype = np.result_type(*pieces)
        shape = (sum(len(p) for p in pieces),) + pieces[0].shape[1:]
        offset = -(-offset // 8) * 8                  # 8-byte aligned views for every dtype
        layout.append((key, dtype.str, shape, offset, dtype.itemsize * math.prod(shape)))
        offset += layout[-1][-1]
    owner = shm.pool()
    handle = shm.Handle(owner, owner.acquire(offset), offset)
    view = handle.data()
    for key, dtype, shape, o, n in layout:            # joined straight into the segment
        np.concatenate(parts[key], out=view[o:o + n].view(dtype).reshape(shape))
    return {"video_ids": [it["video_id"] for it in items], "subsets": [it.get("subset", "") for it in items],
            "_shared": handle, "_layout": layout}


def unpack_shared(batch: dict) -> dict:
    """A ``collate_shared`` batch as ``collate`` returns it (other batches pass unchanged). The
    arrays view shared memory, which the worker reuses once none of them is referenced."""
    if "_shared" not in batch:
        return batch
    batch = dict(batch)
    data = batch.pop("_shared")
    if isinstance(data, shm.Handle):                  # not through a worker
        data = data.lease()
    for key, dtype, shape, o, n in batch.pop("_layout"):
        batch[key] = data[o:o + n].view(dtype).reshape(shape)
    return batch


def loader_collate(num_workers: int):
    """The collate function for a DataLoader with ``num_workers`` workers."""
    return collate_shared if num_workers > 0 else collate
