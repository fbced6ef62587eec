"""The results page (ssp.reporting.page): what it writes, its scores against the tables', the
overlay MP4 decoded back, and the page itself in a real headless browser (Chromium from Debian's
packages, which .ci/run installs; the browser test skips, saying so, where none is installed)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_run_config

from ssp.datasets.manifest import read_manifest
from ssp.evaluation.scoring import evaluate_shards
from ssp.io.captions import read_captions
from ssp.io.store import ShardedStore
from ssp.layout import RunLayout
from ssp.reporting.page import BINARY_COLOUR, build_page, folder_name, write_overlay_mp4

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _predictions(layout: RunLayout, manifest, variant: str, seed: int) -> Path:
    """A binary predictions file of the test split's v1s and v1m videos: the ground truth with
    some pixels flipped (more for a worse variant), in the predictions format."""
    rng = np.random.default_rng(seed)
    masks = ShardedStore.from_manifest(layout.stage_dir("masks"), manifest)
    out = layout.predictions(variant, "test")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = manifest[(manifest.split == "test") & manifest.subset.isin(["v1s", "v1m"])]
    with h5py.File(out, "w") as h5:
        for vid in rows.video_id:
            fg = masks.read(vid, ["foreground"])["foreground"].astype(np.float32)
            noise = rng.random(fg.shape) < (0.05 if variant == "full" else 0.3)
            scores = np.where(noise, 1 - fg, fg) * 0.8 + 0.1
            g = h5.create_group(vid)
            g["scores"] = scores.astype(np.float32)
            g["class_scores"] = np.stack([1 - scores, scores], 1).astype(np.float32)
            g["masks"] = (scores > 0.5).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory):
    cfg = tiny_run_config(tiny_run)
    layout = RunLayout.of(cfg)
    manifest = read_manifest(layout.manifest)
    preds = {"baseline": _predictions(layout, manifest, "baseline", 1), "full": _predictions(layout, manifest, "full", 2)}
    stores = {s: ShardedStore.from_manifest(layout.stage_dir(s), manifest) for s in ("frames", "audio", "masks", "flow_mask")}
    captions = {}
    for f in layout.stage_dir("captions").glob("*.jsonl"):
        captions.update(read_captions(f))
    out = tmp_path_factory.mktemp("page") / "page"
    index = build_page(out, rows=manifest[manifest.split == "test"], frames=stores["frames"], audio=stores["audio"],
                       masks=stores["masks"], flow_masks=stores["flow_mask"], captions=captions, predictions=preds,
                       stage1=preds["baseline"], premask_variants=["full"], title="tiny")
    return {"dir": out, "index": index, "layout": layout, "manifest": manifest, "preds": preds, "captions": captions,
            "stores": stores}


def test_each_video_has_its_files_and_the_scores_are_the_tables_terms(page):
    """Every test video the predictions hold is a row; its frames, a mask layer per variant and
    for the truth, M_O, the pre-mask and its 16 kHz audio are written; the mean of the per-video
    mIoU and F-score over a task's videos is the task's figure in metrics.json."""
    index, layout, manifest = page["index"], page["layout"], page["manifest"]
    expected = set(manifest[(manifest.split == "test") & manifest.subset.isin(["v1s", "v1m"])].video_id)
    assert {v["id"] for v in index["videos"]} == expected and not index["skipped"]
    for v in index["videos"]:
        folder = page["dir"] / "v" / v["dir"]
        data = json.loads(re.fullmatch(r"SSP\.video\((.*)\);\n", (folder / "data.js").read_text(), re.S).group(1))
        assert len(data["frames"]) == v["frames"] and all((folder / f).is_file() for f in data["frames"])
        assert set(data["layers"]) == {"truth", "baseline", "full", "M_O", "M_Pre"}
        for name in ("baseline", "full", "M_O", "M_Pre"):
            assert all((folder / f).is_file() for f in data["layers"][name])
        assert data["a1"] == page["captions"][v["id"]]["a1"] and data["nouns"] == page["captions"][v["id"]]["nouns"]
        from scipy.io import wavfile

        rate, wav = wavfile.read(folder / "audio.wav")
        assert rate == 16000 and len(wav) / rate == pytest.approx(data["duration"]) == v["frames"]
        assert v["diff"] == pytest.approx(v["scores"]["full"]["miou"] - v["scores"]["baseline"]["miou"], abs=2e-4)
    for task, subset in (("s4", "v1s"), ("ms3", "v1m")):
        ours = [v for v in index["videos"] if v["subset"] == subset]
        for variant, path in page["preds"].items():
            table = evaluate_shards(task, layout.manifest, sorted(layout.stage_dir("masks").glob("*.h5")), path)
            assert np.mean([v["scores"][variant]["miou"] for v in ours]) == pytest.approx(table["miou"], abs=1e-4)
            assert np.mean([v["scores"][variant]["fscore"] for v in ours]) == pytest.approx(table["fscore"], abs=1e-4)


def test_a_mask_layer_is_the_prediction_in_its_colour(page):
    v = page["index"]["videos"][0]
    folder = page["dir"] / "v" / v["dir"]
    from PIL import Image

    layer = np.asarray(Image.open(folder / "full_0.png"))
    with h5py.File(page["preds"]["full"]) as h5:
        mask = h5[v["id"]]["masks"][0].astype(bool)
    assert layer.shape[:2] == mask.shape and (layer[..., 3] > 0).tolist() == mask.tolist()
    assert (layer[mask][:, :3] == BINARY_COLOUR).all()


def test_video_ids_get_distinct_folders():
    ids = ["a/b", "a%2Fb", "a~2Fb", "a b", "a_b", "ü", "x.y-z_1"]
    names = [folder_name(i) for i in ids]
    assert len(set(names)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9._~-]+", n) for n in names)
    assert folder_name("x.y-z_1") == "x.y-z_1"


def test_the_overlay_mp4_holds_the_masks_and_the_clips_sound(page, tmp_path):
    """Decoded back: one frame per second of the clip shown for a second, the mask's colour where
    the prediction is and the frame where it is not, and an AAC stream as long as the clip."""
    import av

    v = page["index"]["videos"][0]
    frames = page["stores"]["frames"].read(v["id"], ("frames",))["frames"]
    wav = page["stores"]["audio"].read(v["id"])["wav"]
    with h5py.File(page["preds"]["full"]) as h5:
        mask = h5[v["id"]]["masks"][()].astype(bool)
    from ssp.reporting.page import overlay_rgba

    layers = np.stack([overlay_rgba(m.astype(np.uint8), BINARY_COLOUR) for m in mask])
    out = tmp_path / "overlay.mp4"
    write_overlay_mp4(frames, layers, wav, 16000, out, fps=5)
    with av.open(str(out)) as f:
        vs, au = f.streams.video[0], f.streams.audio[0]
        assert vs.codec_context.name == "h264" and au.codec_context.name == "aac"
        decoded = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(decoded) == 5 * len(frames)
    with av.open(str(out)) as f:
        samples = sum(fr.samples for fr in f.decode(audio=0))
        audio_seconds = float(f.streams.audio[0].duration * f.streams.audio[0].time_base)
    assert audio_seconds == pytest.approx(len(wav) / 16000, abs=0.07)   # one AAC frame of 1024 samples
    assert samples >= len(wav)
    for t in range(len(frames)):
        shown = decoded[5 * t + 2].astype(np.int16)
        inside = mask[t] & (np.abs(np.diff(mask[t].astype(np.int8), axis=0, prepend=0)) == 0)
        if inside.sum() < 20:
            continue
        expected = frames[t].astype(np.float32) * (1 - 150 / 255) + np.array(BINARY_COLOUR) * 150 / 255
        assert np.abs(shown[inside] - expected[inside]).mean() < 12           # the mask's colour
        assert np.abs(shown[~mask[t]] - frames[t][~mask[t]]).mean() < 12      # the frame


def _browser(url: str, tmp_path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and the console messages the browser logged."""
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: install Debian's chromium (.ci/run does)")
def test_the_page_in_a_headless_browser(page, tmp_path):
    """The index opens with no console message or page error and lists every video; sorted by
    the difference, the largest comes first; a video's view shows its frames, each variant's
    masks and the captions, and its audio element has the clip's duration."""
    index = page["index"]
    url = (page["dir"] / "index.html").as_uri()
    dom, console = _browser(url + "#sort=diff&dir=desc", tmp_path)
    assert console == [] and "data-errors" not in dom and 'data-ready="index"' in dom
    listed = re.findall(r'<tr data-video="([^"]+)"', dom)
    assert sorted(listed) == sorted(v["id"] for v in index["videos"])
    diffs = {v["id"]: v["diff"] for v in index["videos"]}
    assert [diffs[i] for i in listed] == sorted(diffs.values(), reverse=True)
    v = max(index["videos"], key=lambda v: v["diff"])
    assert listed[0] == v["id"]
    dom, console = _browser(url + "#video=" + v["id"], tmp_path)
    assert console == [] and "data-errors" not in dom and f'data-ready="video:{v["id"]}"' in dom
    assert f'src="v/{v["dir"]}/f0.jpg"' in dom
    for layer in ("truth", "baseline", "full", "M_O", "M_Pre"):
        assert f'data-layer="{layer}"' in dom
    assert f'src="v/{v["dir"]}/full_0.png"' in dom and f'src="v/{v["dir"]}/baseline_0.png"' in dom
    a1 = page["captions"][v["id"]]["a1"]
    assert f'<dd class="a1">{a1}</dd>' in dom.replace("&amp;", "&")
    duration = re.search(r'<audio[^>]*data-duration="([0-9.]+)"', dom)
    assert duration and float(duration.group(1)) == pytest.approx(v["frames"], abs=0.01)


def test_opus_audio_has_the_clips_duration(page, tmp_path):
    """page.audio: opus writes Ogg Opus a fraction of the WAV's size, as long as the clip; the
    browser reads that duration."""
    import av

    rows = page["manifest"][page["manifest"].video_id.isin([v["id"] for v in page["index"]["videos"][:2]])]
    s = page["stores"]
    out = tmp_path / "page"
    index = build_page(out, rows=rows, frames=s["frames"], audio=s["audio"], masks=s["masks"], flow_masks=s["flow_mask"],
                       captions=page["captions"], predictions=page["preds"], audio_format="opus")
    v = index["videos"][0]
    ogg, wav = out / "v" / v["dir"] / "audio.ogg", page["dir"] / "v" / v["dir"] / "audio.wav"
    assert ogg.stat().st_size < wav.stat().st_size / 4
    with av.open(str(ogg)) as f:
        seconds = sum(fr.samples for fr in f.decode(audio=0)) / f.streams.audio[0].rate
    assert seconds == pytest.approx(v["frames"], abs=0.03)
    if BROWSER is not None:
        dom, console = _browser((out / "index.html").as_uri() + "#video=" + v["id"], tmp_path)
        assert console == [] and 'src="v/' + v["dir"] + '/audio.ogg"' in dom
        duration = re.search(r'<audio[^>]*data-duration="([0-9.]+)"', dom)
        assert duration and float(duration.group(1)) == pytest.approx(v["frames"], abs=0.03)


def _one_video_run(tmp_path, vid: str, *, flow: bool, audio: bool):
    """Shards and predictions of one 3-frame video written by hand (an id a folder of the user's
    clips can give, stages that failed on it)."""
    import pandas as pd

    from ssp.io.store import ShardWriter

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    truth = np.zeros((3, 32, 32), np.uint8)
    truth[:, 8:20, 8:20] = 1
    stages = {"frames": {"frames": frames}, "masks": {"foreground": truth, "labels": truth, "has_mask": np.ones(3, bool)}}
    if flow:
        stages["flow_mask"] = {"flow_mask": truth}
    if audio:
        stages["audio"] = {"wav": np.zeros(3 * 16000, np.float32)}
    for stage in ("frames", "masks", "flow_mask", "audio"):
        with ShardWriter(tmp_path / stage / "00000.h5", {}) as w:
            if stage in stages:
                w.add(vid, stages[stage], attrs={"sample_rate": 16000} if stage == "audio" else None)
    preds = {}
    for v in ("baseline", "full"):
        preds[v] = tmp_path / f"{v}.h5"
        with h5py.File(preds[v], "w") as h5:
            g = h5.create_group(vid)
            g["scores"] = truth.astype(np.float32)
            g["class_scores"] = np.stack([1 - truth, truth], 1).astype(np.float32)
    rows = pd.DataFrame([{"video_id": vid, "subset": "videos", "split": "test", "n_frames": 3, "shard": "00000",
                          "labels": []}])
    stores = {s: ShardedStore.from_manifest(tmp_path / s, rows) for s in ("frames", "masks", "flow_mask", "audio")}
    return rows, stores, preds


def test_a_video_the_flow_and_audio_stages_failed_on_says_so_and_odd_ids_open(tmp_path):
    """An id with a space, a '#', a '%' and a non-ASCII letter gets a folder the browser finds; a
    video without M_O or audio is shown with what it has and says what it lacks (logged too)."""
    vid = "my clip #1 %20 ü"
    rows, stores, preds = _one_video_run(tmp_path, vid, flow=False, audio=False)
    out = tmp_path / "page"
    index = build_page(out, rows=rows, frames=stores["frames"], audio=stores["audio"], masks=stores["masks"],
                       flow_masks=stores["flow_mask"], captions={}, predictions=preds, stage1=preds["baseline"],
                       premask_variants=["full"])
    (v,) = index["videos"]
    data = json.loads(re.fullmatch(r"SSP\.video\((.*)\);\n", (out / "v" / v["dir"] / "data.js").read_text(), re.S).group(1))
    assert any("no M_O" in n for n in data["notes"]) and any("no audio" in n for n in data["notes"])
    assert "M_O" not in data["layers"] and data["audio"] is None and v["scores"]["full"]["miou"] == 1.0
    if BROWSER is None:
        pytest.skip("no headless browser: install Debian's chromium (.ci/run does)")
    from urllib.parse import urlencode

    dom, console = _browser((out / "index.html").as_uri() + "#" + urlencode({"video": vid}), tmp_path)
    assert console == [] and "data-errors" not in dom, dom[-2000:]
    assert 'data-ready="video:my clip #1 %20 ü"' in dom and "no M_O: the flow_mask stage" in dom
    dom, console = _browser((out / "index.html").as_uri(), tmp_path)
    assert console == [] and "data-errors" not in dom and f'<tr data-video="{vid}"' in dom
