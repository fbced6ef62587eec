"""docs/development.md's "Adding a stage" and "Adding a config key", followed step by step in a
copy of the workflow: the files the docs name are the files it takes, and a key read before it is
declared stops the job naming it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import ROOT
from test_workflow import TINY

from ssp.layout import RunLayout

STAGE_MODULE = '''"""Each video's mean brightness, from its frames shard (a stage added as the docs say)."""
import numpy as np

from ssp.datasets.manifest import shard_rows
from ssp.io.store import ShardReader, ShardWriter, provenance


def run_brightness(manifest, shard, frames_path, out, cfg):
    frames = ShardReader(frames_path)
    with ShardWriter(out, provenance("brightness", cfg.settings())) as w:
        for vid in shard_rows(manifest, shard)["video_id"]:
            mean = frames.read(vid, ("frames",))["frames"].mean() * SCALE
            w.add(vid, {"brightness": np.array([mean], np.float32)})
    return w.failures
'''

RULE = '''
rule brightness:
    input:
        manifest=L.manifest,
        frames=L.shard("frames", "{shard}"),
    output:
        L.shard("brightness", "{shard}"),
    log:
        L.log("brightness", "{shard}"),
    params:
        settings=job_settings("brightness"),
    script:
        "../scripts/brightness.py"
'''

SCRIPT = '''"""Rule brightness: snakemake -> the brightness stage for one shard."""
from _job import start

start(snakemake)

from ssp.config import Config
from ssp.stages import STAGES

STAGES["brightness"].run(Config.from_dict(snakemake.config), snakemake.input.manifest,
                         snakemake.wildcards.shard, snakemake.output[0], snakemake.input.frames)
'''

KEY = '''      brightness_scale:
        type: number
        minimum: 0
        default: 1.0
        description: Factor of the brightness stage's means.
'''


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def snakemake(args, cwd, check=True):
    """The copy's own workflow (its Snakefile, its src/), run in it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"snakemake {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned(targets, conf, cwd) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` would run in the copy."""
    out = snakemake(["-n", *targets, "--quiet", "rules", "--configfile", str(conf)], cwd).stdout
    return {p[0]: int(p[1]) for line in out.splitlines() for p in [line.split()]
            if len(p) == 2 and p[1].isdigit() and p[0] not in ("total", "job")}


def ssp_command(args, repo):
    """``python -m ssp`` of the copy's package."""
    return subprocess.run([sys.executable, "-m", "ssp", *args], cwd=repo, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(repo / "src")))


@pytest.mark.workflow
def test_adding_a_stage_and_a_config_key_as_the_docs_say(tmp_path):
    repo = tmp_path / "repo"
    for part in ("workflow", "src", "envs"):
        shutil.copytree(ROOT / part, repo / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Snakefile", repo / "Snakefile")
    conf = repo / "config.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    target = "results/synthavs/brightness/00000.h5"

    # Adding a stage: its function, its registry entry (with what it reads), its rule (included),
    # its script
    (repo / "src/ssp/stages/brightness.py").write_text(STAGE_MODULE.replace("SCALE", "1.0"))
    edit(repo / "src/ssp/stages/__init__.py", '''    Stage("captions", "frames",''',
         '''    Stage("brightness", "frames", "brightness", "ssp.stages.brightness:run_brightness",
          ("preprocess.image_size",)),
    Stage("captions", "frames",''')
    (repo / "workflow/rules/brightness.smk").write_text(RULE)
    edit(repo / "Snakefile", 'include: "workflow/rules/flow.smk"\n',
         'include: "workflow/rules/flow.smk"\ninclude: "workflow/rules/brightness.smk"\n')
    (repo / "workflow/scripts/brightness.py").write_text(SCRIPT)
    snakemake([target, "--configfile", str(conf)], repo)
    with h5py.File(repo / target) as h5:
        assert json.loads(h5.attrs["params"]) == {"preprocess.image_size": 64} and len(h5.keys()) > 0
    cli = ssp_command(["stage", "--help"], repo)
    assert "brightness" in cli.stdout, cli.stdout + cli.stderr

    # Adding a config key: the schema, then its reader; read before it is declared, the job stops
    # naming the key and the job
    edit(repo / "src/ssp/resources/config.schema.yaml", "      sample_rate:\n", KEY + "      sample_rate:\n")
    (repo / "src/ssp/stages/brightness.py").write_text(
        STAGE_MODULE.replace("SCALE", "cfg.preprocess.brightness_scale"))
    (repo / target).unlink()
    proc = snakemake([target, "--configfile", str(conf)], repo, check=False)
    log = RunLayout.at(repo / "results" / "synthavs").log("brightness", "00000").read_text()
    assert proc.returncode and "the brightness job read 'preprocess.brightness_scale'" in log, log[-2000:]
    # declared where the stage's reads are: it runs, its rule's params and its provenance hold it
    edit(repo / "src/ssp/stages/__init__.py", '''          ("preprocess.image_size",)),''',
         '''          ("preprocess.image_size", "preprocess.brightness_scale")),''')
    snakemake([target, "--configfile", str(conf)], repo)
    with h5py.File(repo / target) as h5:
        assert json.loads(h5.attrs["params"])["preprocess.brightness_scale"] == 1.0
    # changing it re-runs that stage alone; the other stages do not read it
    changed = repo / "changed.yaml"
    changed.write_text(yaml.safe_dump({**TINY, "preprocess": {**TINY["preprocess"], "brightness_scale": 2.0}}))
    assert planned([target], changed, repo) == {"brightness": 1}
    assert "brightness" not in planned(["results/synthavs/flow/00000.h5"], changed, repo)
    # the reference page lists it (docs/config-reference.md is made from the schema)
    page = ssp_command(["config-reference"], repo)
    assert "brightness_scale" in page.stdout, page.stderr
