"""The demo DAG through the SLURM profile on a real single-node SLURM cluster.

Starts the cluster with ../shared/slurm/start-slurm.sh, runs a tiny SynthAVS DAG (every stage,
two variants trained and scored) with profiles/slurm as the workflow profile and a site profile
made from profiles/site-example (the test cluster's partition and account, memory that fits its
one node), checks that the jobs went through SLURM (sbatch
submissions in the log, sacct records, kept slurm logs) and that the results equal a local run,
then stops the cluster with stop-slurm.sh. Skips, saying why, where SLURM cannot be had.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the shards' codecs)
import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY_MODEL

SLURM = ROOT.parent / "shared" / "slurm"
PARTITION, ACCOUNT = "debug", "root"   # start-slurm.sh's one partition; root's built-in association
pytestmark = pytest.mark.slurm

CONFIG = {"dataset": {"name": "tiny"},
          "synthetic": {"videos": {"v1s": 4, "v1m": 4, "v2": 1}, "image_size": 48},
          "preprocess": {"image_size": 48}, "shards": {"size": 5}, "vggish": {"weights": "random"},
          "model": TINY_MODEL, "train": {"subsets": ["v1s", "v1m"], "epochs": 1, "num_points": 256},
          "resources": {"use_gpu": False}, "flow": {"figures": 2}}


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the test cluster is started as root")
    if not (SLURM / "start-slurm.sh").exists():
        if shutil.which("sbatch") is None:
            pytest.skip(f"no SLURM here: neither sbatch nor {SLURM / 'start-slurm.sh'}")
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
        if ping.returncode != 0 or " is UP" not in ping.stdout:
            pytest.skip(f"SLURM is installed but no controller answers, and {SLURM / 'start-slurm.sh'} "
                        f"is not there to start one: {(ping.stdout + ping.stderr).strip()[-300:]}")
    else:
        proc = subprocess.run(["bash", str(SLURM / "start-slurm.sh")], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            _stop_cluster()   # the daemons it did start are not left running
            pytest.skip(f"start-slurm.sh failed: {proc.stderr[-2000:]}")
    yield
    _stop_cluster()


def _stop_cluster() -> None:
    if (SLURM / "stop-slurm.sh").exists():
        subprocess.run(["bash", str(SLURM / "stop-slurm.sh")], capture_output=True, timeout=300)


def _site_profile(tmp: Path) -> Path:
    """The user's global profile, made as docs/install.md says from profiles/site-example: the test
    cluster's one partition for every rule, its account, and memory that fits its node (the rules
    ask for a GPU node's: train 64 GB)."""
    site = yaml.safe_load((ROOT / "profiles" / "site-example" / "config.yaml").read_text())
    site["default-resources"] = {"slurm_partition": PARTITION, "slurm_account": ACCOUNT}
    for res in site["set-resources"].values():
        res.update(slurm_partition=PARTITION, mem_mb=4000)
    out = tmp / "mysite"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(site))
    return out


def _snakemake(cwd: Path, *args, limit=1500) -> tuple[subprocess.Popen, Path]:
    """Start Snakemake in ``cwd``; its output goes to a file (nothing blocks on a full pipe)."""
    cmd = ["timeout", "-k", "10", str(limit), sys.executable, "-m", "snakemake", "--snakefile",
           str(ROOT / "Snakefile"), "--configfile", str(cwd / "config.yaml"), *args]
    with open(cwd / "snakemake.out", "w") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT), cwd / "snakemake.out"


def _finished(started: tuple[subprocess.Popen, Path]) -> str:
    proc, out = started
    proc.wait()
    text = out.read_text()
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{text[-12000:]}"
    return text


def test_demo_dag_through_slurm_equals_local(cluster, tmp_path):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    for d in (slurm_dir, local_dir):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # profiles/slurm as it is; jobs of seconds: poll soon (the plugin backs off by 10 s)
    slurm = _snakemake(slurm_dir, "--profile", str(_site_profile(tmp_path)), "--workflow-profile",
                       str(ROOT / "profiles" / "slurm"), "--slurm-init-seconds-before-status-checks", "2")
    local = _snakemake(local_dir, "--cores", "2")   # both at once: the SLURM run mostly waits for its polls
    try:
        log, _ = _finished(slurm), _finished(local)
    finally:
        for proc, _ in (slurm, local):
            if proc.poll() is None:   # the other failed: stop this one too (timeout passes TERM on)
                proc.terminate()
                proc.wait()

    submitted = [line for line in log.splitlines() if "submitted with SLURM jobid" in line]
    assert len(submitted) >= 20, log[-3000:]
    ids = {line.split("jobid")[1].split()[0].strip(" ,.()'") for line in submitted}
    sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State,Partition,Account", "-j",
                            ",".join(ids)], capture_output=True, text=True).stdout
    rows = [line.split("|") for line in sacct.splitlines() if line]
    assert len(rows) == len(ids) and all(r[2] == "COMPLETED" for r in rows), sacct
    assert all(r[3] == PARTITION and r[4] == ACCOUNT for r in rows), sacct   # the site profile's
    assert list((slurm_dir / ".snakemake" / "slurm_logs").rglob("*.log"))

    a, b = slurm_dir / "results" / "tiny", local_dir / "results" / "tiny"
    for stage in ("frames", "masks", "audio", "flow", "flow_mask", "vggish"):
        for f in sorted((b / stage).glob("*.h5")):
            with h5py.File(f) as x, h5py.File(a / stage / f.name) as y:
                assert sorted(x) == sorted(y)
                for vid in x:
                    for key in x[vid]:
                        np.testing.assert_array_equal(x[vid][key][()], y[vid][key][()], err_msg=f"{stage} {vid} {key}")
    for f in sorted((b / "captions").glob("*.jsonl")):
        assert f.read_text() == (a / "captions" / f.name).read_text()
    for f in sorted((b / "metrics").rglob("*.json")):
        x, y = json.loads(f.read_text()), json.loads((a / f.relative_to(b)).read_text())
        assert x["miou"] == pytest.approx(y["miou"], abs=1e-6) and x["fscore"] == pytest.approx(y["fscore"], abs=1e-6)
    assert (a / "report" / "table2.md").read_text() == (b / "report" / "table2.md").read_text()
