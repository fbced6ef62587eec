"""The Snakemake DAG end to end on a tiny SynthAVS, plus lint and dry-run."""
import ast
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY_MODEL
from PIL import Image

from ssp.io.captions import read_captions
from ssp.io.store import ShardReader
from ssp.layout import RunLayout

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
TINY = {"synthetic": {"videos": {"v1s": 4, "v1m": 4, "v2": 1}, "image_size": 64},
        "preprocess": {"image_size": 64}, "shards": {"size": 3}, "vggish": {"weights": "random"},
        "model": TINY_MODEL, "train": {"subsets": ["v1s", "v1m"], "epochs": 1, "num_points": 256}}


def run(args, cwd, check=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned(args, conf, cwd) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` would run."""
    out = run(["-n", *args, "--quiet", "rules", "--configfile", str(conf)], cwd).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def rule_params(workdir: Path, output: Path) -> list:
    """The params Snakemake recorded for the job that wrote ``output`` (its metadata)."""
    name = base64.urlsafe_b64encode(str(output.relative_to(workdir)).encode()).decode()
    return [ast.literal_eval(p) for p in json.loads((workdir / ".snakemake" / "metadata" / name).read_text())["params"]]


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.workflow
def test_demo_dag_end_to_end(tmp_path):
    conf = write_config(tmp_path / "config.yaml", TINY)
    run(["--cores", "2", "--configfile", str(conf)], tmp_path)
    run_dir = RunLayout.at(tmp_path / "results" / "synthavs")
    for stage in ("frames", "audio", "masks", "flow", "flow_mask", "vggish"):
        files = sorted(run_dir.stage_dir(stage).glob("*.h5"))
        assert [f.stem for f in files] == ["00000", "00001", "00002"]
        assert sum(len(ShardReader(f).videos()) for f in files) == 9
    assert sum(len(read_captions(f)) for f in run_dir.stage_dir("captions").glob("*.jsonl")) == 9
    table = run_dir.report("table2.md").read_text()
    assert "| baseline |" in table and "| full | ✓ | ✓ | VTA |" in table and "s4 test mIoU" in table
    for variant in ("baseline", "full"):
        metrics = json.loads(run_dir.metrics(variant, "ms3", "test").read_text())
        assert 0 <= metrics["miou"] <= 1 and metrics["videos"] >= 1
    with h5py.File(run_dir.predictions("full", "test")) as h5:
        assert h5.attrs["premask_test"] == "stage1"
    assert run_dir.figure("qualitative").exists()
    page = json.loads((run_dir.page / "data" / "index.js").read_text()[len("SSP.index("):-len(");\n")])
    m = pd.read_csv(run_dir.manifest)
    tested = set(m[(m.split == "test") & m.subset.isin(["v1s", "v1m"])].video_id)
    assert {v["id"] for v in page["videos"]} == tested and page["compare"] == ["full", "baseline"]
    # inside the Snakemake report (a zip: Snakemake refuses a folder in a single-file report)
    run(["--report", "report.zip", "--configfile", str(conf)], tmp_path)
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    index = next(n for n in names if n.endswith("/index.html") and "/data/raw/" in n)
    base = index[: -len("index.html")]
    assert {base + "page.js", base + "data/index.js"} <= set(names)
    assert sum(n.startswith(base + "v/") and n.endswith("/data.js") for n in names) == len(tested)
    summary = run_dir.summary_md.read_text()
    assert "RANDOM weights" in summary and "SYNTHETIC" in summary
    assert "Training: AAVS's adapters of a frozen Mask2Former" in summary   # the default; TINY sets none
    assert run_dir.figure("flow").stat().st_size > 0
    assert "Skipped videos (0)" in run_dir.summary_md.read_text()
    assert run_dir.log("frames", "00000").stat().st_size > 0
    assert run_dir.benchmark("frames", "00000").exists()
    # a job's rule params (what re-runs it) are the settings its declaration names, which its
    # outputs record: one list (ssp.stages)
    for output in [*(run_dir.stage_dir(s) / "00001.h5" for s in ("frames", "audio", "masks", "flow", "flow_mask",
                                                                 "vggish")), run_dir.predictions("full", "test")]:
        with h5py.File(output) as h5:
            recorded = json.loads(h5.attrs["params"])
        assert recorded and recorded in rule_params(tmp_path, output), output
    # nothing left to do on a second run
    proc = run(["--cores", "2", "--configfile", str(conf), "-n"], tmp_path)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # re-running one stage for all shards redoes it and what depends on it, nothing upstream
    jobs = planned(["--forcerun", "vggish"], conf, tmp_path)
    assert jobs["vggish"] == 3 and "frames" not in jobs and "flow" not in jobs and jobs["train"] == 2
    # one shard of one stage
    jobs = planned(["results/synthavs/audio/00001.h5", "--forcerun", "preprocess"], conf, tmp_path)
    assert jobs == {"preprocess": 1}
    # the paper's studies are targets: Fig. 5 (post-mask weights) and Fig. 6/7 (Q1 wordings)
    jobs = planned(["postmask_sweep"], conf, tmp_path)
    assert jobs["train"] == 5 and jobs["table"] == 1 and "preprocess" not in jobs
    jobs = planned(["prompt_study"], conf, tmp_path)
    assert jobs["captions_study"] == 4 * 3 and jobs["train"] == 8   # each Q1 with VTA and with "att" (Fig. 6)
    jobs = planned(["ablations"], conf, tmp_path)
    assert jobs["train"] == 5  # the 7 rows less baseline and full, already trained
    # validation chose full's epoch with test's stand-in for M_GT: the baseline's val predictions
    val = [line.split(",") for line in (run_dir.train_dir("full") / "metrics.csv").read_text().splitlines()]
    assert {r[5] for r in val if r[4] == "val_premask"} == {"stage1"}
    # the pre-mask test study: the full model, trained once, predicting with each stand-in for M_GT
    jobs = planned(["premask_test_study"], conf, tmp_path)
    assert "train" not in jobs and jobs["predict"] == 8 and jobs["study_figure"] == 1, jobs
    run(["premask_test_study", "--cores", "2", "--configfile", str(conf)], tmp_path)
    study = run_dir.report("premask_test_study.md").read_text()
    assert all(f"| full-pt{c} |" in study for c in ("stage1", "empty", "flow", "none"))
    with h5py.File(run_dir.predictions("full-ptempty", "test")) as h5:
        assert h5.attrs["premask_test"] == "empty"
    assert run_dir.figure("premask_test_study").stat().st_size > 0
    # a changed stage parameter re-runs that stage and its dependents only
    conf2 = write_config(tmp_path / "config2.yaml", {**TINY, "flow": {"min_magnitude": 1.0}})
    jobs = planned([], conf2, tmp_path)
    assert jobs["flow_mask"] == 3 and "flow" not in jobs and "preprocess" not in jobs and "vggish" not in jobs
    # settings that change nothing computed re-run nothing: another backend's settings, the
    # trainer's speed settings; one more variant trains only that variant
    conf4 = write_config(tmp_path / "config4.yaml", {
        **TINY, "flow": {"perceiver": {"batch_size": 2, "attention": "eager"}},
        "train": {**TINY["train"], "num_workers": 0, "channels_last": False, "variants": ["baseline", "full", "premask"]}})
    jobs = planned([], conf4, tmp_path)
    assert jobs["train"] == 1 and not {"flow", "flow_mask", "preprocess"} & set(jobs), jobs
    # another run's models (predict.models_from) predict and are scored here; nothing trains
    shutil.copytree(run_dir.run / "train", tmp_path / "other" / "train")
    conf5 = write_config(tmp_path / "config5.yaml", {**TINY, "predict": {"models_from": str(tmp_path / "other")}})
    jobs = planned([], conf5, tmp_path)
    assert "train" not in jobs and jobs["predict"] == 4 and jobs["evaluate"] == 8 and jobs["table"] == 1, jobs
    # published figures (studies.reference) beside ours: the table is redone, nothing else is retrained
    ref = tmp_path / "paper.csv"
    ref.write_text("variant,task,split,miou,fscore,source\nfull,ms3,test,50.5,60.25,typed by hand\n")
    conf3 = write_config(tmp_path / "config3.yaml", {**TINY, "studies": {"reference": str(ref)}})
    jobs = planned([], conf3, tmp_path)
    assert jobs["table"] == 1 and not {"train", "predict", "evaluate"} & set(jobs)
    run(["--cores", "2", "--configfile", str(conf3)], tmp_path)
    table = run_dir.report("table2.md").read_text()
    assert "| ms3 test mIoU (ref.) |" in table and "| 50.50 |" in table and "typed by hand" in table


@pytest.mark.workflow
def test_video_folder_run_reports_skipped(tmp_path, media, tiny_run):
    """A folder of videos (no ground truth): preprocessing, then masks from the models of another
    run (predict.models_from); every skipped video is reported."""
    from conftest import tiny_run_config

    from ssp.datasets.manifest import read_manifest
    from ssp.engine.jobs import load_captions
    from ssp.engine.loop import train

    trained = tmp_path / "s4"       # the other run: tiny models trained on SynthAVS, 1 epoch
    cfg = tiny_run_config(tiny_run, epochs=1)
    m = read_manifest(RunLayout.of(cfg).manifest)
    train(cfg, m, "baseline", trained / "train" / "baseline")
    train(cfg, m, "full", trained / "train" / "full",
          captions=load_captions(sorted(RunLayout.of(cfg).stage_dir("captions").glob("*.jsonl"))))
    captions = tmp_path / "captions.json"
    captions.write_text('{"chaplin": {"a1": "a man walks", "a2": "man"}}')
    conf = write_config(tmp_path / "config.yaml", {
        "dataset": {"name": "clips", "layout": "videos", "root": str(media)},
        "preprocess": {"image_size": 32}, "shards": {"size": 3}, "model": TINY_MODEL,
        "vggish": {"weights": "random"},
        # captions in another interpreter (MiniCPM-o's route without conda); here the same one
        "captions": {"backend": "file", "file": str(captions), "python": sys.executable},
        "predict": {"models_from": str(trained)}})
    jobs = planned([], conf, tmp_path)
    assert "train" not in jobs and "evaluate" not in jobs
    run(["--cores", "2", "--configfile", str(conf)], tmp_path)
    clips = RunLayout.at(tmp_path / "results" / "clips")
    skipped = clips.skipped_csv.read_text()
    assert "no_audio,audio" in skipped and "no audio stream" in skipped
    assert "no_audio,vggish" in skipped          # later stages name the video too
    assert "fire2,captions" in skipped and "no captions for video 'fire2'" in skipped
    shard_log = clips.log("captions", "00000").read_text()
    assert f"running in {sys.executable}" in shard_log and f"00000: {sys.executable}" in shard_log
    assert str(trained) in clips.summary_md.read_text()
    assert not clips.train_dir("full").parent.exists() and not clips.metrics_dir("full").parent.exists()
    with h5py.File(clips.predictions("full", "test")) as h5:
        assert list(h5) == ["chaplin"]           # the only video with captions and audio
        assert h5["chaplin/scores"].shape == (5, 32, 32) and h5.attrs["weights"].startswith(str(trained))
    with h5py.File(clips.predictions("baseline", "test")) as h5:   # the pre-mask's stage 1
        assert "chaplin" in h5 and "no_audio" not in h5 and len(h5) >= 2
    assert sorted(p.name for p in (clips.prediction_pngs("full", "test") / "chaplin").iterdir()) == \
        [f"{t}.png" for t in range(5)]
    sheet = np.asarray(Image.open(clips.figure("qualitative")))   # Fig. 8 style, 96-px cells
    assert sheet.shape == (16 + 96, 6 * 96, 3)                               # one row: chaplin
    assert (sheet[16:, -96:] == 200).mean() > 0.8                          # truth: grey "no mask" cell
    assert clips.figure("training_curves").exists()             # the other run's curves
    # the results page without scores, and a shareable overlay video per clip (its decoding: test_page.py)
    index = clips.page / "data" / "index.js"
    page = json.loads(index.read_text()[len("SSP.index("):-len(");\n")])
    assert not page["scored"] and "chaplin" in [v["id"] for v in page["videos"]]
    assert any(s["video_id"] == "fire2" for s in page["skipped"])   # predicted by baseline, not by full
    import av

    with av.open(str(clips.page / "v" / "chaplin" / "overlay.mp4")) as f:
        assert f.streams.video[0].codec_context.name == "h264" and f.streams.audio[0].codec_context.name == "aac"
    # without models: preprocessing only, and the summary says how to segment
    conf2 = write_config(tmp_path / "config2.yaml", {**yaml.safe_load(conf.read_text()), "predict": {"models_from": None}})
    assert set(planned([], conf2, tmp_path)) <= {"summary", "all"}
    run(["--cores", "2", "--configfile", str(conf2)], tmp_path)
    assert "Set predict.models_from" in clips.summary_md.read_text()


@pytest.mark.workflow
def test_a_clip_added_to_the_videos_folder_later_is_seen(tmp_path, media):
    """Without videos_csv the manifest depends on the folder's listing: a clip added after a run
    rebuilds it (the log says how many were added), and nothing else is asked for."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(media / "chaplin.mp4")
    (folder / "...webm").symlink_to(media / "chaplin.mp4")                 # refused: id '..'
    conf = write_config(tmp_path / "config.yaml", {"dataset": {"name": "clips", "layout": "videos", "root": str(folder)},
                                                   "vggish": {"weights": "random"}, "model": TINY_MODEL,
                                                   "captions": {"backend": "file", "file": str(media / "README.md")}})
    clips = RunLayout.at(tmp_path / "results" / "clips")
    target = [str(clips.manifest.relative_to(tmp_path))]
    run(["--cores", "1", *target, "--configfile", str(conf)], tmp_path)
    assert "'..'" in clips.manifest_refused.read_text()
    assert planned(target, conf, tmp_path) == {}                          # nothing to be done
    (folder / "b.mp4").symlink_to(media / "fire2.mp4")
    proc = run(["-n", *target, "--configfile", str(conf)], tmp_path)
    assert "1 video(s) added and 0 removed" in proc.stdout + proc.stderr
    run(["--cores", "1", *target, "--configfile", str(conf)], tmp_path)
    assert sorted(pd.read_csv(clips.manifest)["video_id"]) == ["a", "b"]


def test_wrong_config_key_fails_at_once(tmp_path):
    conf = write_config(tmp_path / "config.yaml", {"shards": {"sise": 3}})
    proc = run(["-n", "--configfile", str(conf)], tmp_path, check=False)
    assert proc.returncode != 0
    assert "unknown key(s) 'sise' under 'shards'" in proc.stdout + proc.stderr


def test_missing_dataset_root_fails_at_once(tmp_path):
    conf = write_config(tmp_path / "config.yaml", {"dataset": {"layout": "avsbench_semantic",
                                                               "root": str(tmp_path / "AVSBench")}})
    proc = run(["-n", "--configfile", str(conf)], tmp_path, check=False)
    assert proc.returncode != 0
    assert "AVSBench" in proc.stdout + proc.stderr and "does not exist" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = run(["--lint"], ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_plans_the_demo(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    proc = run(["-n", "--configfile", str(tmp_path / "config.yaml")], tmp_path)
    out = proc.stdout + proc.stderr
    assert "synth" in out and "manifest" in out


def test_minicpm_o_without_its_environment_is_warned_about_when_the_dag_is_built(tmp_path):
    """MiniCPM-o's code cannot import under transformers 5: a run that gives its rules neither
    envs/minicpmo.yaml (--use-conda) nor captions.python says so before anything runs."""
    from conftest import placeholder_model_folder

    folder = placeholder_model_folder(tmp_path / "MiniCPM-o-2_6")
    captions = {"backend": "minicpm-o", "model": str(folder), "trust_remote_code": True}
    conf = write_config(tmp_path / "config.yaml", {**TINY, "captions": captions})
    proc = run(["-n", "--configfile", str(conf)], tmp_path)
    out = proc.stdout + proc.stderr
    assert "WARNING: captions.backend is minicpm-o" in out and "transformers 4.44.2" in out
    # with captions.python (or --use-conda) it is not said: tests/test_cli.py, the same function


@pytest.mark.workflow
def test_plan_full_avss_sized_dag(tmp_path):
    """benchmarks/plan_scale.py: 12,356 videos plan as jobs per shard (the time is printed, not tested)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_scale.py"), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fig["videos"] == 12356 and fig["shards"] == 194
    # 7 stages per shard; train stage1/baseline/full (3), predict 3 x {val, test} (6), evaluate 2 x 2 (4),
    # table, summary, flow figure, figures, the results page, all (6)
    assert fig["jobs"] == 7 * 194 + 3 + 6 + 4 + 6
