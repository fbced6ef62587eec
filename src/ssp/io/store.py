"""Sharded HDF5 store: one file per (stage, shard), one group per video.

Writing: ``ShardWriter`` writes to a temporary name unique to the writer and renames it to the
final name only when the ``with`` block ends without an exception (``ssp.io.files``), so an
interrupted write never leaves a file that a later run takes as complete. Failed videos are
recorded (video, stage, reason) in the shard's ``failures`` attribute, next to provenance
attributes. Every numeric array's CRC-32 is recorded (the file's ``crc32`` attribute: JSON,
video -> array name -> CRC), read once when the file is opened.

Storage: each array is one HDF5 chunk (a video's array is read and decompressed whole, and only
the arrays a reader asks for are touched), compressed with the codec ``codec_for`` picks by its
type: Zstandard for 8-bit arrays (frames, masks), Blosc's byte shuffle + Zstandard for wider
numbers (flow, maps, audio, scores); both from ``hdf5plugin``, whose import registers them with
HDF5 (``benchmarks/footprint.py`` measures them against HDF5's own gzip and lzf). The shard's
``storage`` attribute records the format and each array's codec. A shard without it (written
uncompressed, each array contiguous) reads as before.

Reading: ``ShardReader`` / ``ShardedStore`` open files lazily and re-open after a fork, so
they are safe to create in the main process and use in DataLoader workers. Each array read is
checked against its CRC-32; a damaged, cut or unreadable shard raises ``ShardError`` with its
path and how to make it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import h5py
import hdf5plugin  # registers the Zstandard and Blosc filters: writing and reading shards need it
import numpy as np

from ssp import __version__
from ssp.io.files import _fsync

REDO = "delete it and run snakemake again, which makes it and what reads it anew"


class ShardError(OSError):
    """A shard that cannot be read as written (damaged, cut short, not complete); names the file."""


def crc32(arr: np.ndarray) -> int:
    """An array's CRC-32 over its bytes in C order (damage to the file shows as a different value)."""
    return zlib.crc32(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _checked(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biuf"


STORAGE_FORMAT = 2   # 1: uncompressed, contiguous (shards without a ``storage`` attribute)
SMALL = 4096         # bytes: arrays below this are stored as they are (a codec's header outweighs them)
# codec name -> its HDF5 filter arguments (``benchmarks/footprint.py`` compares them with gzip and lzf)
CODECS = {
    "zstd3": lambda: dict(hdf5plugin.Zstd(clevel=3)),
    "blosc-zstd5-shuffle": lambda: dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
}
# arrays whose bytes a codec cannot shrink: encoded image files
STORED_AS_IS = {"source_bytes"}


def codec_for(name: str, arr: np.ndarray) -> str | None:
    """The codec an array is written with, by its type: ``zstd3`` for 8-bit arrays (frames, masks:
    Zstandard's long window finds the repeats of an image), ``blosc-zstd5-shuffle`` for wider numbers
    (their bytes shuffled by significance first: flow, Eq. 1 maps, audio, scores); None for what is
    small, empty, not a plain number, or already compressed."""
    if name in STORED_AS_IS or arr.dtype.kind not in "biuf" or arr.nbytes < SMALL or arr.ndim == 0:
        return None
    return "zstd3" if arr.dtype.itemsize == 1 else "blosc-zstd5-shuffle"


@dataclass(frozen=True)
class Failure:
    video_id: str
    stage: str
    reason: str


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(stage: str, settings: dict, **extra) -> dict:
    """Attributes stamped on every shard: who wrote it, from what, with which settings (``params``:
    the job's settings that change its outputs, ``Config.settings``, what its rule's params hold;
    ``config_hash``: their hash)."""
    params = json.dumps(settings, sort_keys=True)
    return {"stage": stage, "ssp_version": __version__, "git_commit": git_commit(),
            "config_hash": hashlib.sha256(params.encode()).hexdigest()[:16], "params": params,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


class ShardWriter:
    """Context manager that writes one shard atomically; ``compress=False`` writes the uncompressed
    format 1 (each array contiguous), which the footprint benchmark and the tests of old shards use."""

    def __init__(self, path: str | Path, attrs: dict, compress: bool = True):
        self.path = Path(path)
        self.compress = compress
        self.codecs: dict[str, str] = {}
        self.tmp: Path | None = None
        self.attrs = attrs
        self.failures: list[Failure] = []
        self.written: list[str] = []
        self.sums: dict[str, dict[str, int]] = {}
        self.h5: h5py.File | None = None

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        # HDF5 1.10's file format: a one-chunk dataset needs no chunk B-tree (1.3 KB per video of a
        # masks shard instead of 8.6 KB); HDF5 1.10 and later read it
        self.h5 = h5py.File(self.tmp, "w", libver=("v110", "v110")) if self.compress else h5py.File(self.tmp, "w")
        for k, v in self.attrs.items():
            self.h5.attrs[k] = v
        return self

    def add(self, video_id: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
        g = self.h5.create_group(video_id)
        sums = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            codec = codec_for(name, arr) if self.compress else None
            if codec is None:
                g.create_dataset(name, data=arr)
            else:
                g.create_dataset(name, data=arr, chunks=arr.shape, **CODECS[codec]())   # one chunk per video
                self.codecs.setdefault(name, codec)
            if _checked(arr):
                sums[name] = crc32(arr)
        for k, v in (attrs or {}).items():
            g.attrs[k] = v
        self.sums[video_id] = sums
        self.written.append(video_id)

    def fail(self, video_id: str, stage: str, reason: str) -> None:
        self.failures.append(Failure(video_id, stage, reason))

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self.h5.attrs["failures"] = json.dumps([asdict(f) for f in self.failures])
                self.h5.attrs["videos"] = json.dumps(self.written)
                self.h5.attrs["crc32"] = json.dumps(self.sums)
                if self.compress:
                    self.h5.attrs["storage"] = json.dumps(storage_record(self.codecs))
                self.h5.attrs["complete"] = True
            self.h5.close()
            if exc_type is None:
                _fsync(self.tmp)
        finally:
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        return False


def storage_record(codecs: dict[str, str]) -> dict:
    """The ``storage`` attribute: the format, each compressed array's codec (an array not named is
    stored as it is), one chunk per video's array, and the hdf5plugin that wrote them."""
    return {"format": STORAGE_FORMAT, "chunks": "one per video and array", "codecs": dict(sorted(codecs.items())),
            "hdf5plugin": hdf5plugin.version, "hdf5_file_format": "v110"}


def storage_of(h5: h5py.File) -> dict:
    """A shard's storage record; a shard without one is format 1 (uncompressed, contiguous)."""
    raw = h5.attrs.get("storage")
    return json.loads(raw) if raw is not None else {"format": 1, "chunks": "contiguous", "codecs": {}}


def read_failures(path: str | Path) -> list[Failure]:
    with h5py.File(path, "r") as h5:
        return [Failure(**f) for f in json.loads(h5.attrs["failures"])]


class ShardReader:
    """Lazy, fork-safe reader of one shard file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        self._sums: dict = {}

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            try:
                h5 = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise
            except OSError as exc:   # cut short, or its superblock damaged
                raise ShardError(f"{self.path} cannot be opened as HDF5 ({_first_line(exc)}): {REDO}") from None
            if not h5.attrs.get("complete", False):   # refused at every access, not only the first
                h5.close()
                raise ShardError(f"{self.path} is not a complete shard: {REDO}")
            try:
                sums = json.loads(h5.attrs.get("crc32", "{}"))   # shards written before CRCs: unchecked
            except (OSError, ValueError) as exc:
                h5.close()
                raise ShardError(f"{self.path}: its checksums cannot be read ({_first_line(exc)}): {REDO}") from None
            self._h5, self._fd, self._pid, self._sums = h5, os.open(self.path, os.O_RDONLY), os.getpid(), sums
        return self._h5

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.h5

    def read(self, video_id: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The video's arrays (only ``keys``, when given: nothing else is read from disk), each
        checked against the CRC-32 written with it (shards written before CRCs were: unchecked)."""
        try:
            h5 = self.h5
            sums = self._sums.get(video_id, {})
            if keys is None:
                keys = list(h5[video_id])
            out = {k: self._dataset(f"{video_id}/{k}") for k in keys}
        except (KeyError, ShardError):
            raise
        except (OSError, RuntimeError, ValueError) as exc:   # HDF5's own errors on damaged metadata
            raise ShardError(f"{self.path}: video {video_id!r} cannot be read ({_first_line(exc)}): "
                             f"the shard is damaged; {REDO}") from None
        for k, arr in out.items():
            if k in sums and crc32(np.asarray(arr)) != sums[k]:
                raise ShardError(f"{self.path}: {video_id}/{k} does not match its CRC-32 (the file is damaged): "
                                 f"{REDO}")
        return out

    def _dataset(self, name: str) -> np.ndarray:
        """One dataset's array. An uncompressed dataset's bytes lie in one run of the file (HDF5's
        contiguous layout: small arrays, and every array of a format-1 shard): they are read with one
        ``pread`` at its offset, a third of h5py's time. A compressed one (its chunk), and any dtype
        that is not a plain native number, goes through h5py."""
        d = h5py.h5d.open(self.h5.id, name.encode())
        offset, dtype = d.get_offset(), d.dtype   # offset: None unless contiguous and allocated
        if offset is None or dtype.kind not in "biuf" or not dtype.isnative:
            return h5py.Dataset(d)[()]
        out = np.empty(d.shape, dtype)
        if os.preadv(self._fd, [out.reshape(-1).view(np.uint8)], offset) != out.nbytes:
            raise ShardError(f"{self.path}: dataset {name} is cut short (a truncated shard): {REDO}")
        return out if out.ndim else out[()]     # a scalar, as h5py gives it

    def attrs(self, video_id: str | None = None) -> dict:
        node = self.h5 if video_id is None else self.h5[video_id]
        return dict(node.attrs)

    def storage(self) -> dict:
        return storage_of(self.h5)

    def videos(self) -> list[str]:
        return json.loads(self.h5.attrs["videos"])

    def failures(self) -> list[Failure]:
        return [Failure(**f) for f in json.loads(self.h5.attrs["failures"])]

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
            os.close(self._fd)
        self._h5 = self._fd = None

    def __getstate__(self):  # pickled into DataLoader workers without an open handle
        return {"path": self.path, "_h5": None, "_fd": None, "_pid": None, "_sums": {}}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def binary_masks(reader: ShardReader, video_id: str) -> np.ndarray:
    """A binary predictions file's masks of one video, uint8 [T, H, W] in {0, 1}: its ``masks`` (the
    argmax of the two class scores, as AAVS saves its stage-1 predictions), or, in a file written
    without them, ``scores`` > 0.5 (the same pixels: the sounding share is above 0.5 exactly where
    the argmax picks sounding)."""
    if "masks" in reader.h5[video_id]:
        return reader.read(video_id, ("masks",))["masks"]
    return (reader.read(video_id, ("scores",))["scores"] > 0.5).astype(np.uint8)


class ShardedStore:
    """One stage's shards, addressed by video id through the manifest's shard index."""

    def __init__(self, stage_dir: str | Path, index: dict[str, str]):
        self.stage_dir = Path(stage_dir)
        self.index = dict(index)
        self._readers: dict[str, ShardReader] = {}

    @classmethod
    def from_manifest(cls, stage_dir: str | Path, manifest) -> "ShardedStore":
        return cls(stage_dir, dict(zip(manifest["video_id"], manifest["shard"])))

    def reader(self, shard: str) -> ShardReader:
        if shard not in self._readers:
            self._readers[shard] = ShardReader(self.stage_dir / f"{shard}.h5")
        return self._readers[shard]

    def __contains__(self, video_id: str) -> bool:
        shard = self.index.get(video_id)
        return shard is not None and video_id in self.reader(shard)

    def read(self, video_id: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        if video_id not in self.index:
            raise KeyError(f"video {video_id!r} is not in the manifest")
        reader = self.reader(self.index[video_id])
        try:
            return reader.read(video_id, keys)
        except KeyError:
            raise KeyError(f"video {video_id!r} has no entry in {reader.path} (see its failures)") from None

    def attrs(self, video_id: str) -> dict:
        """A video's attributes (what its stage recorded of it)."""
        if video_id not in self.index:
            raise KeyError(f"video {video_id!r} is not in the manifest")
        return self.reader(self.index[video_id]).attrs(video_id)

    def failures(self) -> list[Failure]:
        out = []
        for shard in sorted(set(self.index.values())):
            out.extend(self.reader(shard).failures())
        return out


def iter_shard_failures(paths: Iterable[str | Path]) -> list[Failure]:
    out = []
    for p in paths:
        out.extend(read_failures(p))
    return out
