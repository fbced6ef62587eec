"""The Snakemake DAG end to end on a tiny SynthAVS, plus lint and dry-run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import ROOT, TINY_MODEL
from ssp.captions_stage import read_captions
from ssp.store import ShardReader

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


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.workflow
def test_demo_dag_end_to_end(tmp_path):
    conf = write_config(tmp_path / "config.yaml", TINY)
    run(["--cores", "2", "--configfile", str(conf)], tmp_path)
    run_dir = tmp_path / "results" / "synthavs"
    for stage in ("frames", "audio", "masks", "flow", "flow_mask", "vggish"):
        files = sorted((run_dir / stage).glob("*.h5"))
        assert [f.stem for f in files] == ["00000", "00001", "00002"]
        assert sum(len(ShardReader(f).videos()) for f in files) == 9
    assert sum(len(read_captions(f)) for f in (run_dir / "captions").glob("*.jsonl")) == 9
    table = (run_dir / "report" / "table2.md").read_text()
    assert "| baseline |" in table and "| full | ✓ | ✓ | VTA |" in table and "s4 test mIoU" in table
    for variant in ("baseline", "full"):
        metrics = json.loads((run_dir / "metrics" / variant / "ms3_test.json").read_text())
        assert 0 <= metrics["miou"] <= 1 and metrics["videos"] >= 1
    with h5py.File(run_dir / "predictions" / "full" / "test.h5") as h5:
        assert h5.attrs["premask_test"] == "stage1"
    assert (run_dir / "figures" / "qualitative.png").exists()
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "RANDOM weights" in summary and "SYNTHETIC" in summary
    assert (run_dir / "figures" / "flow.png").stat().st_size > 0
    assert "Skipped videos (0)" in (run_dir / "report" / "summary.md").read_text()
    assert (run_dir / "logs" / "frames" / "00000.log").stat().st_size > 0
    assert (run_dir / "benchmarks" / "frames" / "00000.tsv").exists()
    # nothing left to do on a second run
    proc = run(["--cores", "2", "--configfile", str(conf), "-n"], tmp_path)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_video_folder_run_reports_skipped(tmp_path, media):
    captions = tmp_path / "captions.json"
    captions.write_text('{"chaplin": {"a1": "a man walks", "a2": "man"}}')
    conf = write_config(tmp_path / "config.yaml", {
        "dataset": {"name": "clips", "layout": "videos", "root": str(media)},
        "preprocess": {"image_size": 32}, "shards": {"size": 3},
        "vggish": {"weights": "random"}, "captions": {"backend": "file", "file": str(captions)}})
    run(["results/clips/report/summary.md", "--cores", "2", "--configfile", str(conf)], tmp_path)
    report = tmp_path / "results" / "clips" / "report"
    skipped = (report / "skipped.csv").read_text()
    assert "no_audio,audio" in skipped and "no audio stream" in skipped
    assert "no_audio,vggish" in skipped          # later stages name the video too
    assert "fire2,captions" in skipped and "no captions for video 'fire2'" in skipped
    assert ShardReader(tmp_path / "results" / "clips" / "frames" / "00000.h5").videos()


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
