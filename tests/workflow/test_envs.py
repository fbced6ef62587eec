"""The conda environments of envs/ (which cannot be built here: no conda channel can be reached)
against what the code they run requires."""
import re
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ENVS = Path(__file__).resolve().parents[2] / "envs"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pins(env_file: str) -> dict[str, str]:
    """name -> version of every conda (name=version) and pip (name==version) pin of an env file."""
    out = {}
    for dep in yaml.safe_load((ENVS / env_file).read_text())["dependencies"]:
        if isinstance(dep, dict):
            out.update(p.split("==") for p in dep["pip"])
        else:
            name, version = dep.split("=")
            out[name] = version
    return out


def pyproject_requirement(name: str) -> SpecifierSet:
    text = PYPROJECT.read_text()
    return SpecifierSet(re.search(rf'"{name}([<>=!~][^"]*)"', text).group(1))


def test_torch_env_meets_transformers_minimum_torch():
    """transformers 5 treats an older PyTorch as absent (every model import then fails); its
    minimum is read from the installed transformers, the version the env pins."""
    from transformers.dependency_versions_table import deps

    env = pins("torch.yaml")
    torch_min = SpecifierSet(deps["torch"].removeprefix("torch"))
    assert Version(env["pytorch"]) in torch_min, (env["pytorch"], deps["torch"])
    lower = min(Version(s.version) for s in pyproject_requirement("torch") if s.operator == ">=")
    assert lower in torch_min, (str(lower), deps["torch"])
    assert Version(env["transformers"]) in pyproject_requirement("transformers")
    assert Version(env["safetensors"]) in SpecifierSet(deps["safetensors"].removeprefix("safetensors"))


def test_minicpm_o_environment_pins_agree():
    """envs/minicpmo.yaml (conda) and envs/minicpmo-requirements.txt (make minicpmo-env) pin the same
    versions, transformers that of MiniCPM-o-2.6's model card."""
    from ssp.prompts.captioners import MINICPMO_TRANSFORMERS

    env = pins("minicpmo.yaml")
    env.pop("python"), env.pop("pip")
    lines = [ln.strip() for ln in (ENVS / "minicpmo-requirements.txt").read_text().splitlines()]
    reqs = dict(ln.split("==") for ln in lines if ln and not ln.startswith("#"))
    assert env == reqs
    assert reqs["transformers"] == MINICPMO_TRANSFORMERS
    assert Version(reqs["numpy"]) < Version("2")          # torch 2.3.1 was built against numpy 1


def test_every_rule_names_an_env_that_exists():
    rules = (ENVS.parent / "workflow" / "rules").glob("*.smk")
    named = {m for f in rules for m in re.findall(r'"\.\./\.\./envs/([\w.-]+\.yaml)"', f.read_text())}
    assert named == {"preprocess.yaml", "torch.yaml", "minicpmo.yaml"}
    assert all((ENVS / n).is_file() for n in named)


PREPROCESS_ENV_RUN = r'''
import importlib.abc, json, sys
from pathlib import Path

class NotInThisEnv(importlib.abc.MetaPathFinder):   # envs/preprocess.yaml has none of these
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "transformers", "safetensors", "torchvggish", "matplotlib"}:
            raise ImportError(f"{name} is not in envs/preprocess.yaml")

sys.meta_path.insert(0, NotInThisEnv())
import h5py
import numpy as np
from ssp.cli import main
from ssp.datasets.manifest import read_manifest
from ssp.stages.flow import figure
from ssp.io.media import read_mask
from ssp.io.store import ShardReader

conf, run, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
cfg = ["--config", conf]
if phase == "summary":          # after the torch rules (vggish, captions) made their shards
    assert main(["summary", "--strict", *cfg]) == 0
    sys.exit(0)
assert main(["synth", *cfg]) == 0 and main(["manifest", *cfg]) == 0
m = read_manifest(run / "manifest.csv")
for stage in ["frames", "audio", "masks", "flow", "flow_mask"]:     # flow: DIS (OpenCV)
    for shard in sorted(m["shard"].unique()):
        assert main(["stage", stage, "--shard", shard, *cfg]) == 0, stage
r = lambda s: ShardReader(run / s / "00000.h5")
figure(list(m[m.shard == "00000"].video_id[:2]), r("frames"), r("flow"), r("flow_mask"), run / "flow.png")
test = m[(m.split == "test") & (m.subset == "v1s")]
with h5py.File(run / "pred.h5", "w") as h5:
    for row in test.itertuples():
        truth = np.stack([read_mask(p, "rgb", 48, 71) > 0 for p in row.mask_paths])
        h5.create_group(row.video_id).create_dataset("scores", data=truth.astype(np.float32))
assert main(["evaluate", "--fscore", "avsbench", "--task", "s4", "--root", str(run / "data"),
             "--predictions", str(run / "pred.h5"),
             "--split", "test", "--out", str(run / "m.json")]) == 0
print(json.dumps(json.loads((run / "m.json").read_text())["miou"]))
'''


def test_preprocess_env_rules_run_without_torch(tmp_path):
    """The rules that envs/preprocess.yaml serves (synth, manifest, preprocess, flow_mask,
    flow_figure, summary, evaluate) import nothing it lacks: run in a process where torch,
    transformers and matplotlib cannot be imported."""
    import subprocess
    import sys

    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({
        "results": str(tmp_path / "results"), "synthetic": {"videos": {"v1s": 4, "v1m": 2, "v2": 1}, "image_size": 48},
        "preprocess": {"image_size": 48}, "shards": {"size": 4}, "flow": {"backend": "dis"},
        "vggish": {"weights": "random"}}))
    from ssp.cli import main

    run = tmp_path / "results" / "synthavs"

    def without_torch(phase):
        return subprocess.run([sys.executable, "-c", PREPROCESS_ENV_RUN, str(conf), str(run), phase],
                              capture_output=True, text=True, timeout=600,
                              env={"PYTHONPATH": str(ENVS.parent / "src"), "PATH": "/usr/bin:/bin"})

    proc = without_torch("stages")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(1.0, abs=1e-6)   # the truth scores perfectly
    assert (run / "flow.png").is_file()
    for stage in ["vggish", "captions"]:                               # the torch environment's rules
        for shard in ["00000", "00001"]:
            assert main(["stage", stage, "--shard", shard, "--config", str(conf)]) == 0
    proc = without_torch("summary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "report" / "summary.md").is_file()


def test_minicpmo_env_runs_the_captions_stage_without_what_it_lacks(tmp_path):
    """envs/minicpmo.yaml has no matplotlib and no snakemake: the captions stage (here with the file
    backend) runs in a process that cannot import them, as `python -m ssp.stages.captions` does
    when captions.python names that environment's interpreter."""
    import json
    import subprocess
    import sys

    from ssp.cli import main

    captions = tmp_path / "captions.json"
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({
        "results": str(tmp_path / "results"), "synthetic": {"videos": {"v1s": 2, "v1m": 0, "v2": 0}, "image_size": 32},
        "preprocess": {"image_size": 32}, "captions": {"backend": "file", "file": str(captions)}}))
    captions.write_text("{}")
    assert main(["synth", "--config", str(conf)]) == 0 and main(["manifest", "--config", str(conf)]) == 0
    run = tmp_path / "results" / "synthavs"
    from ssp.datasets.manifest import read_manifest

    ids = list(read_manifest(run / "manifest.csv").video_id)
    captions.write_text(json.dumps({v: {"a1": "a dog barks", "a2": "dog"} for v in ids}))
    assert main(["stage", "frames", "--shard", "00000", "--config", str(conf)]) == 0
    script = (
        "import importlib.abc, sys\n"
        "class NotInThisEnv(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'matplotlib', 'snakemake'}:\n"
        "            raise ImportError(name + ' is not in envs/minicpmo.yaml')\n"
        "sys.meta_path.insert(0, NotInThisEnv())\n"
        "from ssp.cli import main\n"
        "sys.exit(main(['stage', 'captions', '--shard', '00000', '--config', sys.argv[1]]))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(conf)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ENVS.parent / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ssp.io.captions import read_captions

    assert sorted(read_captions(run / "captions" / "00000.jsonl")) == sorted(ids)


PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
             "manylinux1_x86_64", "linux_x86_64")


def pip_pins() -> dict[str, dict[str, str]]:
    """file -> name -> version of every pip pin of every environment file: the requirements files and
    the pip sections of the conda environments (their conda packages come from conda-forge)."""
    files = {}
    for path in sorted(ENVS.glob("*requirements*.txt")):
        lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
        files[path.name] = dict(ln.split("==") for ln in lines if ln)
    for path in sorted(ENVS.glob("*.yaml")):
        files[path.name] = {k: v for dep in yaml.safe_load(path.read_text())["dependencies"] if isinstance(dep, dict)
                            for k, v in (p.split("==") for p in dep["pip"])}
    return files


def test_every_pinned_pip_package_installs_from_a_wheel():
    """Each pip pin of each environment file has a wheel for the Python 3.11 the files target
    (make minicpmo-env builds no package from source: a source-only pin needs compilers and
    libraries a fresh machine lacks). `pip index versions --only-binary=:all:` lists the versions
    with such a wheel, one query per package and nothing downloaded; skipped where the package
    index cannot be reached."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    wanted: dict[str, set[str]] = {}
    for pins_of_file in pip_pins().values():
        for name, version in pins_of_file.items():
            wanted.setdefault(name, set()).add(version)
    platform = [a for p in PLATFORMS for a in ("--platform", p)]

    def versions(name: str) -> tuple[str, subprocess.CompletedProcess]:
        cmd = [sys.executable, "-m", "pip", "index", "versions", name, "--only-binary=:all:",
               "--python-version", "3.11", "--implementation", "cp", *platform]
        return name, subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(versions, sorted(wanted)))
    unreachable = [n for n, p in answers.items() if p.returncode and "No matching distribution" not in p.stderr]
    if len(unreachable) == len(answers):
        pytest.skip(f"the package index cannot be reached: {answers[unreachable[0]].stderr.strip()[-300:]}")
    missing = {}
    for name, proc in answers.items():
        listed = re.search(r"Available versions: (.*)", proc.stdout)
        have = {v.strip() for v in listed.group(1).split(",")} if listed else set()
        if wanted[name] - have:
            missing[name] = sorted(wanted[name] - have)
    assert not missing, f"pinned versions with no wheel for Python 3.11 on linux x86_64: {missing}"
