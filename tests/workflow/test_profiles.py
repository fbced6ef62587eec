"""The SLURM profiles: profiles/slurm (tracked) holds how the workflow runs and no site's settings;
a user's global profile (started from profiles/site-example) gives partitions and account, and
they reach every job beside the resources the rules state (docs/install.md, "Running on a SLURM
cluster"). The real cluster run of both together is tests/workflow/test_slurm.py."""
import re

import pytest
import yaml
from conftest import ROOT
from test_workflow import TINY, run, write_config

SLURM_PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SITE_EXAMPLE = ROOT / "profiles" / "site-example" / "config.yaml"


def _gpu_rules() -> set[str]:
    """Rules that declare a `gpu` resource, with the rules made from them by `use rule`."""
    gpu_rules, rule = set(), None
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for line in smk.read_text().splitlines():
            if m := re.match(r"(?:rule|checkpoint) (\w+):", line):
                rule = m.group(1)
            elif m := re.match(r"use rule (\w+) as (\w+)", line):   # inherits the rule's resources
                rule = m.group(2)
                if m.group(1) in gpu_rules:
                    gpu_rules.add(rule)
            elif re.match(r"\s+gpu=", line):
                gpu_rules.add(rule)
    return gpu_rules


def _jobs_resources(dry_run: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of each job in `snakemake -n`'s output."""
    jobs, rule = [], None
    for line in dry_run.splitlines():
        if m := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line.strip()):
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule is not None:
            pairs = (item.split("=", 1) for item in line.strip()[len("resources:"):].split(", "))
            jobs.append((rule, {k.strip(): v.strip() for k, v in pairs}))
            rule = None
    return jobs


def test_the_workflow_profile_holds_no_site_setting():
    """Snakemake reads a workflow profile's keys over a global profile's whole (a list or mapping is
    replaced, not merged), so resources set here would erase the user's partitions and account."""
    prof = yaml.safe_load(SLURM_PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert not {"default-resources", "set-resources", "resources"} & set(prof), prof
    assert not re.search(r"^[^#]*slurm_(partition|account)", SLURM_PROFILE.read_text(), re.M)


def test_the_site_example_names_exactly_the_rules_that_may_ask_for_a_gpu():
    """A rule that asks for a GPU and is not sent to the GPU partition gets a GPU request on the CPU
    partition (the prompt study's captions once did)."""
    site = yaml.safe_load(SITE_EXAMPLE.read_text())
    gpu = _gpu_rules()
    assert {"flow", "captions", "captions_study", "vggish", "train", "predict"} <= gpu
    assert set(site["set-resources"]) == gpu
    assert set(site["default-resources"]) == {"slurm_partition"}


@pytest.mark.workflow
def test_a_site_profile_sets_partitions_and_account_of_every_job(tmp_path):
    """`--profile <site> --workflow-profile profiles/slurm`, as the docs run it: after `snakemake
    plan` (the whole DAG visible), every job's resources carry the site's account, the GPU partition
    on the GPU rules and the CPU partition elsewhere, and the rules' own mem_mb and runtime."""
    site = yaml.safe_load(SITE_EXAMPLE.read_text())
    site["default-resources"] = {"slurm_partition": "cpu_q", "slurm_account": "lab42"}
    for res in site["set-resources"].values():
        res["slurm_partition"] = "gpu_q"
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "config.yaml").write_text(yaml.safe_dump(site))
    conf = write_config(tmp_path / "config.yaml", {**TINY, "resources": {"use_gpu": True}})
    run(["plan", "--cores", "1", "--configfile", str(conf)], tmp_path)
    out = run(["-n", "--profile", str(tmp_path / "mysite"), "--workflow-profile", str(SLURM_PROFILE.parent),
               "--configfile", str(conf)], tmp_path).stdout
    jobs = _jobs_resources(out)
    rules = {rule for rule, _ in jobs}
    assert {"preprocess", "flow", "vggish", "captions", "train", "predict", "evaluate"} <= rules, out[-3000:]
    gpu_rules = set(site["set-resources"])
    for rule, res in jobs:
        assert res.get("slurm_account") == "lab42", (rule, res)
        assert res.get("slurm_partition") == ("gpu_q" if rule in gpu_rules else "cpu_q"), (rule, res)
        if int(res.get("gpu", 0)):
            assert rule in gpu_rules, (rule, res)
    train = dict(jobs)["train"]
    assert train["mem_mb"] == "64000" and train["runtime"] == "2880" and train["gpu"] == "1"
    assert train["cpus_per_gpu"] == "8"


def test_the_docs_run_slurm_with_a_site_profile():
    for doc in (ROOT / "README.md", ROOT / "docs" / "install.md"):
        commands = [line for line in doc.read_text().splitlines() if "--workflow-profile profiles/slurm" in line]
        assert commands, doc
        for line in commands:
            if "snakemake" in line and "`" not in line:   # a command line, not a mention in prose
                assert "--profile" in line.replace("--workflow-profile", ""), (doc, line)
    assert not re.search(r"[Ee]dit `profiles/slurm", (ROOT / "docs" / "install.md").read_text())

