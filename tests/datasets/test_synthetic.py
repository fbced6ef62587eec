import hashlib
import json

import numpy as np
import pandas as pd
from PIL import Image

from ssp.datasets.synthavs import LABELS, generate, load_scene, load_true_flow
from ssp.io.palette import rgb_to_labels

ARGS = dict(videos={"v1s": 3, "v1m": 2, "v2": 2}, train=0.5, val=0.25, image_size=64,
            classes=("dog", "guitar", "car", "piano"), max_objects=3, progress=False)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    generate(tmp_path / "a", seed=3, **ARGS)
    generate(tmp_path / "b", seed=3, **ARGS)
    generate(tmp_path / "c", seed=4, **ARGS)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_content(tmp_path):
    root = tmp_path / "s"
    n = generate(root, seed=0, **ARGS)
    meta = pd.read_csv(root / "metadata.csv")
    assert n == len(meta) == 7
    assert list(meta.columns) == ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"]
    assert json.loads((root / "label2idx.json").read_text())["woman"] == 71
    cases = set()
    for r in meta.itertuples():
        T = 10 if r.label == "v2" else 5
        vdir = root / r.label / r.uid
        assert len(list((vdir / "frames").glob("*.jpg"))) == T
        n_masks = len(list((vdir / "labels_rgb").glob("*.png")))
        assert n_masks == (1 if (r.label == "v1s" and r.split == "train") else T)
        scene = load_scene(root, r.uid)
        flow = load_true_flow(root, r.uid)
        assert flow.shape == (T - 1, 64, 64, 2)
        labels = rgb_to_labels(np.asarray(Image.open(vdir / "labels_rgb" / "0.png")))
        sounding = {LABELS.index(o["label"]) for o in scene["objects"] if o["sounding"]}
        assert set(np.unique(labels)) - {0} <= sounding
        for o in scene["objects"]:
            cases.add((o["sounding"], o["moving"]))
        if r.label == "v1s":
            assert sum(o["sounding"] for o in scene["objects"]) == 1
    # the cases the paper is about appear in the data
    assert (True, True) in cases and (False, True) in cases


def test_regenerate_replaces_previous(tmp_path):
    root = tmp_path / "s"
    generate(root, seed=0, **ARGS)
    small = dict(ARGS, videos={"v1s": 1, "v1m": 0, "v2": 0})
    generate(root, seed=0, **small)
    assert len(list((root / "v1s").iterdir())) == 1
    assert not (root / "v2").exists()


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "precious.txt").write_text("data")
    try:
        generate(tmp_path / "x", seed=0, **ARGS)
    except FileExistsError as exc:
        assert "refusing" in str(exc)
    else:
        raise AssertionError("generate wrote into a foreign folder")
