import shutil

import pytest
from conftest import make_config

from ssp.config import ConfigError
from ssp.datasets.manifest import DatasetError, assign_shards, build_manifest, read_manifest, shards_of, write_manifest


def test_semantic_reader(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)})
    df = read_back(build_manifest(cfg), tmp_path)
    assert list(df["video_id"]) == ["vidB_1", "vidA_0", "vidC_2"]  # sorted by subset, split, id
    a = df.set_index("video_id").loc["vidA_0"]
    assert a.subset == "v1s" and a.split == "train" and a.n_frames == 5
    frames, masks = a.frame_paths, a.mask_paths
    assert frames[0].endswith("v1s/vidA_0/frames/0.jpg") and frames[4].endswith("frames/4.jpg")
    assert masks[0].endswith("labels_rgb/0.png") and masks[1:] == [None] * 4  # v1s train: frame 0 only
    c = df.set_index("video_id").loc["vidC_2"]
    assert c.n_frames == 10 and c.audio_path.endswith("v2/vidC_2/audio.wav")
    b = df.set_index("video_id").loc["vidB_1"]
    assert b.labels == ["guitar", "man"]


def test_semantic_subset_and_split_filters(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root),
                                         "subsets": ["v1s", "v1m"], "splits": ["val", "test"]})
    assert list(build_manifest(cfg)["video_id"]) == ["vidB_1"]


def test_semantic_missing_label_file(tmp_path, semantic_root):
    """The config check names the missing class table before anything runs; a table gone after
    the check stops the manifest, naming it."""
    dataset = {"layout": "avsbench_semantic", "root": str(semantic_root)}
    cfg = make_config(tmp_path, dataset=dataset)
    (semantic_root / "label2idx.json").unlink()
    with pytest.raises(DatasetError, match="label2idx.json"):
        build_manifest(cfg)
    with pytest.raises(ConfigError, match="label2idx.json' does not exist"):
        make_config(tmp_path, dataset=dataset)


def test_object_s4_reader(tmp_path, object_s4_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_object_s4", "root": str(object_s4_root)})
    df = read_back(build_manifest(cfg), tmp_path)
    row = df.set_index("video_id").loc["dogA"]
    assert row.frame_paths[0].endswith("visual_frames/train/dog_barking/dogA/dogA_1.png")
    assert row.mask_paths[0].endswith("gt_masks/train/dog_barking/dogA/dogA_1.png")
    assert row.mask_paths[1:] == [None] * 4
    assert row.audio_path.endswith("audio_wav/train/dog_barking/dogA.wav")
    assert row.labels == ["dog_barking"] and row.mask_format == "binary"
    test = df.set_index("video_id").loc["gunC"]
    assert all(p is not None for p in test.mask_paths)


def test_object_ms3_reader(tmp_path, object_ms3_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_object_ms3", "root": str(object_ms3_root)})
    df = read_back(build_manifest(cfg), tmp_path)
    row = df.set_index("video_id").loc["msB"]
    assert row.split == "val"
    assert row.frame_paths[2].endswith("ms3_data/visual_frames/msB/msB.mp4_3.png")
    assert row.mask_paths[4].endswith("ms3_data/gt_masks/val/msB/msB_5.png")
    assert row.audio_path.endswith("ms3_data/audio_wav/val/msB.wav")


def test_video_folder_reader_with_and_without_csv(tmp_path, media):
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(media), "frames_per_video": 5})
    df = build_manifest(cfg)
    assert set(df["video_id"]) == {"chaplin", "fire2", "no_audio", "video_with_failing_audio",
                                   "big_buck_bunny_432_433"}
    assert set(df["split"]) == {"test"} and set(df["source"]) == {"video"}
    csv = tmp_path / "splits.csv"
    csv.write_text("video,split\nchaplin.mp4,train\nfire2.mp4,val\n")
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(media), "videos_csv": str(csv)})
    df = build_manifest(cfg)
    assert dict(zip(df["video_id"], df["split"])) == {"chaplin": "train", "fire2": "val"}


def test_sharding_is_deterministic(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)},
                      shards={"size": 2})
    a, b = build_manifest(cfg), build_manifest(cfg)
    assert list(a["shard"]) == list(b["shard"]) == ["00000", "00000", "00001"]
    # the same videos listed in another order give the same assignment
    shuffled = assign_shards(a.sample(frac=1, random_state=0).sort_values(["subset", "split", "video_id"]), 2)
    assert list(shuffled["shard"]) == list(a["shard"])
    assert shards_of(a) == ["00000", "00001"]


def test_manifest_round_trip(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root)})
    df = read_back(build_manifest(cfg), tmp_path)
    assert isinstance(df["mask_paths"][0], list)


def test_limit_and_empty(tmp_path, semantic_root):
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root), "limit": 2})
    assert len(build_manifest(cfg)) == 2
    shutil.rmtree(semantic_root / "v1s")
    cfg = make_config(tmp_path, dataset={"layout": "avsbench_semantic", "root": str(semantic_root),
                                         "subsets": ["v1s"], "splits": ["val"]})
    with pytest.raises(DatasetError, match="no videos found"):
        build_manifest(cfg)


def read_back(df, tmp_path):
    write_manifest(df, tmp_path / "m.csv")
    return read_manifest(tmp_path / "m.csv")


def _clips(folder, media, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).symlink_to(media / "chaplin.mp4")
    return folder


def test_hostile_video_names_and_files_are_refused_with_their_reason(tmp_path, media):
    """A clip named ..webm (id '.'), ...webm (id '..': its PNG masks would go above the split's
    folder), a FIFO named x.mp4 (the decoder would hang) and a folder named y.mkv are left out of
    the manifest, each with its reason, and reach the run's skipped.csv; the other clips go on."""
    import os

    from ssp.datasets.manifest import read_refused, write_refused
    from ssp.reporting.summary import write_summary

    folder = _clips(tmp_path / "clips", media, ["good.mp4", "..webm", "...webm", "new\nline.mp4"])
    os.mkfifo(folder / "x.mp4")
    (folder / "y.mkv").mkdir()
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(folder)})
    refused = []
    df = build_manifest(cfg, refused)
    assert list(df["video_id"]) == ["good"]
    reasons = dict(refused)
    assert set(reasons) == {".", "..", "new\nline", "x", "y"}
    assert "video id '.' names no folder" in reasons["."] and "video id '..' names no folder" in reasons[".."]
    assert "control character" in reasons["new\nline"]
    assert "x.mp4 is not a regular file" in reasons["x"] and "y.mkv is not a regular file" in reasons["y"]
    manifest = tmp_path / "manifest.csv"
    write_manifest(df, manifest)
    write_refused(refused, manifest)
    rows = read_refused(manifest)
    failures = write_summary({}, len(df), tmp_path / "skipped.csv", tmp_path / "summary.md", refused=rows)
    assert len(failures) == 5
    skipped = (tmp_path / "skipped.csv").read_text()
    assert "x.mp4 is not a regular file" in skipped and ",manifest," in skipped
    assert "| manifest | 0 | 1 | 5 |" in (tmp_path / "summary.md").read_text()
