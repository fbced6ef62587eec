import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ssp.io.store import ShardedStore, ShardReader, ShardWriter, provenance


def _write(path, ids, fail=()):
    with ShardWriter(path, provenance("frames", {"preprocess.image_size": 8})) as w:
        for i, vid in enumerate(ids):
            w.add(vid, {"frames": np.full((2, 8, 8, 3), i, np.uint8)}, {"n_valid": 2})
        for vid in fail:
            w.fail(vid, "frames", f"{vid}.mp4: the file has no audio stream")


def test_round_trip_and_provenance(tmp_path):
    _write(tmp_path / "00000.h5", ["a", "b"], fail=["c"])
    r = ShardReader(tmp_path / "00000.h5")
    assert r.videos() == ["a", "b"]
    assert r.read("b")["frames"].max() == 1
    assert r.attrs("a")["n_valid"] == 2
    attrs = r.attrs()
    assert attrs["stage"] == "frames" and len(attrs["config_hash"]) == 16
    assert json.loads(attrs["params"]) == {"preprocess.image_size": 8}
    assert {"ssp_version", "git_commit", "created"} <= set(attrs)
    [f] = r.failures()
    assert f.video_id == "c" and "no audio stream" in f.reason


def test_exception_leaves_no_file(tmp_path):
    path = tmp_path / "00000.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, {}) as w:
            w.add("a", {"x": np.zeros(3)})
            raise RuntimeError("decoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_complete_file(tmp_path):
    """A process killed mid-write leaves only a .tmp file, never the final name."""
    path = tmp_path / "00000.h5"
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from ssp.io.store import ShardWriter
        with ShardWriter({str(path)!r}, {{}}) as w:
            w.add("a", {{"x": np.zeros(1000)}})
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(n.endswith(".tmp") for n in leftovers)
    with pytest.raises(OSError):  # and a reader refuses anything incomplete
        ShardReader(tmp_path / leftovers[0]).h5


def test_incomplete_file_is_refused(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("a")
    reader = ShardReader(path)
    for _ in range(2):   # and again at the next access
        with pytest.raises(OSError, match="not a complete shard"):
            reader.read("a")


class _Frames(Dataset):
    def __init__(self, store, ids):
        self.store, self.ids = store, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], torch.from_numpy(self.store.read(self.ids[i])["frames"]), os.getpid()


def test_dataloader_with_two_workers(tmp_path):
    _write(tmp_path / "00000.h5", ["a", "b", "c"])
    _write(tmp_path / "00001.h5", ["d", "e"])
    index = {"a": "00000", "b": "00000", "c": "00000", "d": "00001", "e": "00001"}
    store = ShardedStore(tmp_path, index)
    assert "a" in store  # opened in the parent before forking: must still work in workers
    ds = _Frames(store, sorted(index))
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork")
    seen, pids = {}, set()
    for (vid,), frames, pid in loader:
        seen[vid] = int(frames.max())
        pids.add(int(pid))
    assert seen == {"a": 0, "b": 1, "c": 2, "d": 0, "e": 1}
    assert len(pids) == 2 and os.getpid() not in pids


def test_missing_video_names_shard(tmp_path):
    _write(tmp_path / "00000.h5", ["a"], fail=["b"])
    store = ShardedStore(tmp_path, {"a": "00000", "b": "00000"})
    with pytest.raises(KeyError, match="see its failures"):
        store.read("b")
    with pytest.raises(KeyError, match="not in the manifest"):
        store.read("zzz")
    assert [f.video_id for f in store.failures()] == ["b"]


def test_read_only_the_keys_asked_for(tmp_path):
    with ShardWriter(tmp_path / "00000.h5", provenance("flow_mask", {})) as w:
        w.add("a", {"flow_mask": np.ones((2, 4, 4), np.uint8), "gray": np.zeros((2, 4, 4), np.float16)}, {})
    store = ShardedStore(tmp_path, {"a": "00000"})
    assert set(store.read("a")) == {"flow_mask", "gray"}
    assert set(store.read("a", ("flow_mask",))) == {"flow_mask"}
    with pytest.raises(KeyError, match="no entry"):
        store.read("a", ("labels",))



def test_offset_reads_equal_h5py_for_every_layout_and_dtype(tmp_path):
    """Contiguous native numbers are read at their file offset; everything else through h5py.
    Both give exactly h5py's arrays, a user block before the HDF5 data included."""
    rng = np.random.default_rng(0)
    arrays = {"u8": rng.integers(0, 255, (3, 5, 7, 3), dtype=np.uint8), "b": rng.random(5) > 0.5,
              "f2": rng.standard_normal((4, 6)).astype(np.float16), "f4": rng.standard_normal((2, 9)).astype(np.float32),
              "i8": rng.integers(-9, 9, 11), "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.uint8),
              "big_endian": np.arange(6, dtype=">i4"), "text": np.array([b"a1", b"a2"])}
    path = tmp_path / "00000.h5"
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5.attrs["complete"] = True
        for k, a in arrays.items():
            h5.create_dataset(f"v/{k}", data=a)
        h5.create_dataset("v/gzip", data=arrays["u8"], compression="gzip", chunks=(1, 5, 7, 3))
    reader = ShardReader(path)
    got = reader.read("v")
    with h5py.File(path, "r") as h5:
        for k in list(arrays) + ["gzip"]:
            want = h5["v"][k][()]
            assert type(got[k]) is type(want) and np.asarray(got[k]).dtype == np.asarray(want).dtype, k
            np.testing.assert_array_equal(got[k], want, err_msg=k)
        assert h5["v/u8"].id.get_offset() is not None and h5["v/gzip"].id.get_offset() is None
    reader.close()


def data_offset(dataset: h5py.Dataset) -> int:
    """Where a dataset's bytes start in its file: contiguous, or its one chunk."""
    offset = dataset.id.get_offset()
    return offset if offset is not None else dataset.id.get_chunk_info(0).byte_offset


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "format-1"])
def test_a_damaged_shard_is_caught_by_its_checksums_and_named(tmp_path, compress):
    """4 KiB zeroed inside the data of a shard, or the file cut short: the read stops with the
    file and how to make it again, never returns other bytes (a compressed chunk: its codec or the
    CRC-32 of what it decodes to says so)."""
    from ssp.io.store import ShardError

    path = tmp_path / "00000.h5"
    with ShardWriter(path, {}, compress=compress) as w:
        for vid in ("a", "b"):
            w.add(vid, {"frames": np.random.default_rng(0).integers(1, 255, (4, 64, 64, 3), dtype=np.uint8),
                        "audio": np.linspace(-1, 1, 16000, dtype=np.float32)})
    good = path.read_bytes()
    offset = data_offset(h5py.File(path, "r")["b/frames"])
    data = bytearray(good)
    data[offset + 8192: offset + 8192 + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    r = ShardReader(path)
    assert r.read("a")["frames"].shape == (4, 64, 64, 3)                  # the other video is intact
    with pytest.raises(ShardError, match=r"00000.h5: (b/frames does not match its CRC-32|video 'b' cannot be read)"
                                         r".*delete it and run snakemake again"):
        r.read("b")
    r.close()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ShardError, match=r"00000.h5 (cannot be opened as HDF5|: .*cut short|.*cannot be read)"):
        ShardReader(path).read("b")


def test_every_numeric_array_carries_its_crc(tmp_path):
    from ssp.io.store import crc32

    path = tmp_path / "00000.h5"
    arrays = {"m": np.eye(3, dtype=bool), "x": np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::2]}
    with ShardWriter(path, {}) as w:
        w.add("v", arrays)
    with h5py.File(path, "r") as h5:
        sums = json.loads(h5.attrs["crc32"])["v"]
    assert sums == {k: crc32(v) for k, v in arrays.items()}
    assert all(np.array_equal(ShardReader(path).read("v")[k], v) for k, v in arrays.items())


def _arrays(rng) -> dict:
    """One video's arrays of every kind a shard holds."""
    blocks = rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)            # an image of 4 x 4 pixel blocks
    return {"frames": blocks.repeat(4, axis=1).repeat(4, axis=2),
            "labels": (rng.random((5, 32, 32)) > 0.7).astype(np.uint8), "has_mask": np.ones(5, bool),
            "flow": rng.standard_normal((4, 32, 32, 2)).astype(np.float16),
            "wav": np.sin(np.arange(16000, dtype=np.float32) / 9), "vggish": rng.random((5, 128), np.float32),
            "scores": rng.random((5, 32, 32), np.float32), "empty": np.zeros((0, 32, 32, 2), np.float16),
            "source_bytes": rng.integers(0, 255, 9000, dtype=np.uint8), "n": np.int64(3)}


def test_arrays_are_compressed_by_type_one_chunk_each_and_the_shard_says_how(tmp_path):
    """8-bit arrays with Zstandard, wider numbers with Blosc (shuffle + Zstandard), each one chunk;
    small, empty and already-encoded arrays as they are. What is read is what was written, CRCs
    checked, and the ``storage`` attribute names the format and every compressed array's codec."""
    import hdf5plugin

    from ssp.io.store import STORAGE_FORMAT

    arrays = _arrays(np.random.default_rng(0))
    path = tmp_path / "00000.h5"
    with ShardWriter(path, {}) as w:
        w.add("v", arrays)
    r = ShardReader(path)
    got = r.read("v")
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a), k
    storage = r.storage()
    assert storage["format"] == STORAGE_FORMAT == 2 and storage["hdf5plugin"] == hdf5plugin.version
    assert storage["codecs"] == {"frames": "zstd3", "labels": "zstd3", "flow": "blosc-zstd5-shuffle",
                                 "wav": "blosc-zstd5-shuffle", "scores": "blosc-zstd5-shuffle"}
    with h5py.File(path, "r") as h5:
        for k in storage["codecs"]:
            d = h5["v"][k]
            assert d.chunks == d.shape and d.id.get_num_chunks() == 1, k            # the video's array, whole
        assert h5["v/frames"].id.get_storage_size() < arrays["frames"].nbytes
        assert h5["v/labels"].id.get_storage_size() * 3 < arrays["labels"].nbytes
        for k in ("has_mask", "vggish", "empty", "source_bytes", "n"):
            assert h5["v"][k].chunks is None, k                                     # contiguous, as written
    r.close()


def test_an_uncompressed_shard_of_format_1_still_reads(tmp_path):
    """A shard written before compression (no ``storage`` attribute, every array contiguous, read at
    its offset) reads as before, and says it is format 1."""
    arrays = _arrays(np.random.default_rng(1))
    path = tmp_path / "00000.h5"
    with ShardWriter(path, {"stage": "frames"}, compress=False) as w:
        w.add("v", arrays)
    with h5py.File(path, "r") as h5:
        assert "storage" not in h5.attrs and all(h5["v"][k].chunks is None for k in arrays)
    r = ShardReader(path)
    assert r.storage() == {"format": 1, "chunks": "contiguous", "codecs": {}}
    assert all(np.array_equal(r.read("v")[k], a) for k, a in arrays.items())
    r.close()
