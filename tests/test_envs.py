"""The conda environments of envs/ (which cannot be built here: no conda channel can be reached)
against what the code they run requires."""
import re
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ENVS = Path(__file__).resolve().parents[1] / "envs"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


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
    from ssp.captions import MINICPMO_TRANSFORMERS

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
