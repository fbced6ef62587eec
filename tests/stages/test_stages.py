"""Stages over a whole shard: real clips through the folder-of-videos path, and each layout."""
import shutil
from pathlib import Path

import numpy as np
from conftest import make_config

from ssp.datasets.manifest import build_manifest
from ssp.io.store import ShardReader
from ssp.reporting.summary import write_summary
from ssp.stages.preprocess import run_audio, run_frames, run_masks


def test_video_folder_shard_with_bad_inputs(tmp_path, media):
    folder = tmp_path / "videos"
    folder.mkdir()
    for f in media.iterdir():
        if f.suffix in (".mp4", ".webm"):
            (folder / f.name).symlink_to(f)
    (folder / "corrupt.mp4").write_bytes(b"not a video at all" * 50)
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(folder)},
                      preprocess={"image_size": 32}, shards={"size": 100})
    df = build_manifest(cfg)
    assert len(df) == 6 and set(df["shard"]) == {"00000"}
    out = tmp_path / "out"
    frame_fail = run_frames(df, "00000", out / "frames.h5", cfg)
    audio_fail = run_audio(df, "00000", out / "audio.h5", cfg)
    assert {f.video_id for f in frame_fail} == {"corrupt"}
    assert {f.video_id: f.stage for f in audio_fail} == {"corrupt": "audio", "no_audio": "audio"}
    assert "no audio stream" in next(f.reason for f in audio_fail if f.video_id == "no_audio")
    frames, audio = ShardReader(out / "frames.h5"), ShardReader(out / "audio.h5")
    assert len(frames.videos()) == 5 and len(audio.videos()) == 4
    assert frames.read("chaplin")["frames"].shape == (5, 32, 32, 3)
    assert frames.attrs("fire2")["n_valid"] == 2
    wav = audio.read("chaplin")["wav"]
    assert wav.shape == (5 * 16000,) and audio.attrs("chaplin")["n_valid_samples"] == 80000
    assert audio.attrs("fire2")["n_valid_samples"] < 2.5 * 16000
    failures = write_summary({"frames": [out / "frames.h5"], "audio": [out / "audio.h5"]}, len(df),
                             out / "skipped.csv", out / "summary.md")
    assert len(failures) == 3
    text = (out / "summary.md").read_text()
    assert "no_audio" in text and "corrupt" in text and "| audio | 1 | 4 | 2 |" in text


def test_semantic_stages(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)},
                      preprocess={"image_size": 24})
    df = build_manifest(cfg)
    assert run_frames(df, "00000", tmp_path / "f.h5", cfg) == []
    assert run_audio(df, "00000", tmp_path / "a.h5", cfg) == []
    assert run_masks(df, "00000", tmp_path / "m.h5", cfg) == []
    masks = ShardReader(tmp_path / "m.h5")
    a = masks.read("vidA_0")
    assert a["labels"].shape == (5, 24, 24) and list(a["has_mask"]) == [True] + [False] * 4
    assert set(np.unique(a["labels"][0])) == {0, 17}  # dog = class index 17
    c = masks.read("vidC_2")
    assert c["has_mask"].all() and c["labels"].shape[0] == 10
    assert ShardReader(tmp_path / "f.h5").read("vidC_2")["frames"].shape == (10, 24, 24, 3)


def test_missing_mask_and_frame_are_reported(tmp_path, semantic_root):
    (semantic_root / "v1m" / "vidB_1" / "labels_rgb" / "3.png").unlink()
    shutil.rmtree(semantic_root / "v2" / "vidC_2" / "frames")
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)},
                      preprocess={"image_size": 24})
    df = build_manifest(cfg)
    [m] = run_masks(df, "00000", tmp_path / "m.h5", cfg)
    assert m.video_id == "vidB_1" and "labels_rgb/3.png: mask file is missing" in m.reason
    [f] = run_frames(df, "00000", tmp_path / "f.h5", cfg)
    assert f.video_id == "vidC_2" and "frames/0.jpg: frame file is missing" in f.reason
    assert ShardReader(tmp_path / "m.h5").videos() == ["vidA_0", "vidC_2"]


def test_object_layout_stages(tmp_path, object_s4_root, object_ms3_root):
    for layout, root, vid in (("avsbench_object_s4", object_s4_root, "gunC"),
                              ("avsbench_object_ms3", object_ms3_root, "msB")):
        cfg = make_config(tmp_path, dataset={"layout": layout, "root": str(root)}, preprocess={"image_size": 16})
        df = build_manifest(cfg)
        assert run_masks(df, "00000", tmp_path / f"{layout}.h5", cfg) == []
        labels = ShardReader(tmp_path / f"{layout}.h5").read(vid)["labels"]
        assert set(np.unique(labels)) == {0, 1}
        assert run_audio(df, "00000", tmp_path / f"{layout}-a.h5", cfg) == []


def test_frames_and_audio_shards_record_which_decoder_read_each_video(tmp_path, media):
    """A webm without duration metadata (as browsers record) is read by PyAV, the others by
    decord; each shard says which, and the run summary counts them."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "chaplin.mp4").symlink_to(media / "chaplin.mp4")
    maker = Path(__file__).parents[1] / "io" / "make_clips.py"
    subprocess.run([sys.executable, str(maker), str(folder / "recorded.webm"),
                    json.dumps({"codec": "libvpx-vp9", "audio": "libopus", "seekable": False})], check=True)
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(folder)}, preprocess={"image_size": 32})
    df = build_manifest(cfg)
    out = tmp_path / "out"
    assert run_frames(df, "00000", out / "frames.h5", cfg) == [] and run_audio(df, "00000", out / "audio.h5", cfg) == []
    frames, audio = ShardReader(out / "frames.h5"), ShardReader(out / "audio.h5")
    assert frames.attrs("recorded")["decoder"] == "pyav" and frames.attrs("chaplin")["decoder"] == "decord"
    assert frames.read("recorded")["frames"].shape == (5, 32, 32, 3) and frames.attrs("recorded")["n_valid"] == 3
    assert {audio.attrs(v)["decoder"] for v in ("recorded", "chaplin")} <= {"decord", "pyav"}
    write_summary({"frames": [out / "frames.h5"], "audio": [out / "audio.h5"]}, len(df), out / "skipped.csv",
                  out / "summary.md")
    assert "| frames | 1 | 2 | 0 | decord: 1, pyav: 1 |" in (out / "summary.md").read_text()


def test_the_network_reads_one_resize_from_the_source_however_the_shard_keeps_it(tmp_path, semantic_root, media):
    """``input_frames: source``: frame files at the stored size are kept once (the stored frames are
    the source), at another size as their own bytes, frames of a video file as the resized copy;
    each way the network reads exactly ``resize_input`` of the source frame (AAVS's one resize)."""
    import h5py

    from ssp.io.media import load_frame_files, read_video, resize_input
    from ssp.stages.preprocess import network_frames, network_keys

    def written(cfg, name):
        df = build_manifest(cfg)
        assert run_frames(df, "00000", tmp_path / name, cfg) == []
        return df.set_index("video_id"), ShardReader(tmp_path / name)

    from PIL import Image

    rng = np.random.default_rng(0)
    for path in (semantic_root / "v2" / "vidC_2" / "frames").glob("*.jpg"):   # texture, so resizes differ
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path, quality=90)
    source = load_frame_files(build_manifest(make_config(tmp_path, dataset={
        "layout": "avsbench_semantic", "root": str(semantic_root)})).set_index("video_id").loc["vidC_2"].frame_paths)
    side = source[0].shape[0]
    cases = {"frames": (side, "vidC_2"), "source_files": (side // 2, "vidC_2")}
    for how, (size, vid) in cases.items():
        cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)},
                          preprocess={"image_size": size}, model={"size": 40})
        rows, shard = written(cfg, f"{how}.h5")
        attrs = shard.attrs(vid)
        assert attrs["pixels"] == how and attrs["pixels_size"] == 40
        with h5py.File(tmp_path / f"{how}.h5") as h5:
            assert "pixels" not in h5[vid] and ("source_bytes" in h5[vid]) == (how == "source_files")
        got = network_frames(shard.read(vid, network_keys(attrs)), attrs)
        assert np.array_equal(got, np.stack([resize_input(f, 40) for f in source])), how
        stored = shard.read(vid, ("frames",))["frames"]
        assert np.array_equal(stored, np.stack(source)) == (how == "frames")     # else a second resize
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "chaplin.mp4").symlink_to(media / "chaplin.mp4")
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(folder)}, preprocess={"image_size": 32},
                      model={"size": 40})
    _, shard = written(cfg, "video.h5")
    attrs = shard.attrs("chaplin")
    assert attrs["pixels"] == "stored" and network_keys(attrs) == ("pixels",)
    raw, _, _ = read_video(media / "chaplin.mp4", 5)
    assert np.array_equal(network_frames(shard.read("chaplin", network_keys(attrs)), attrs),
                          np.stack([resize_input(f, 40) for f in raw]))
