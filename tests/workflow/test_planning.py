"""Planning imports no torch: `snakemake -n` and `ssp check-config` must be instant on a login node,
and the table rules run in the preprocessing environment."""
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, TINY_MODEL

BLOCKER = '''
import importlib.abc, sys

class NotForPlanning(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "transformers", "safetensors", "torchvggish", "matplotlib"}:
            raise ImportError(f"planning must not import {name}")

sys.meta_path.insert(0, NotForPlanning())
'''


@pytest.fixture
def without_torch(tmp_path):
    """An environment whose processes cannot import torch, transformers or matplotlib."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT / 'src'}")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "planning must not import torch" in probe.stderr   # the blocker works
    return env


def test_planning_imports_no_torch(tmp_path, without_torch):
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), "vggish": {"weights": "random"},
                                    "model": TINY_MODEL}))
    for targets in ([], ["ablations", "postmask_sweep", "prompt_study"]):
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *targets,
                               "--configfile", str(conf), "-n", "--quiet", "rules"],
                              cwd=tmp_path, env=without_torch, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "synth" in proc.stdout and "train" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ssp", "check-config", "--config", str(conf)], cwd=tmp_path,
                          env=without_torch, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr[-3000:]
    for paper in (["paper.yaml", "s4.yaml"], ["paper.yaml", "avss.yaml"]):   # errors (no weights here), not crashes
        proc = subprocess.run([sys.executable, "-m", "ssp", "check-config", "--config",
                               *[str(ROOT / "configs" / c) for c in paper]],
                              cwd=tmp_path, env=without_torch, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
