"""Every command the README and docs/ show is run: here, as written, in a folder laid out like the
checkout (with `-n` added where it would run the paper's whole DAG), or by the test or `make`
target named for it in RUN_BY. A command added to the docs without a place in RUN_BY fails
test_every_docs_command_is_run_somewhere, naming it."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_configs import _load, _pointed_at

DOCS = [ROOT / "README.md", ROOT / "configs" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAPER_DRY = "-n"   # the paper's runs are planned, not run (its models are not here; tests run them small)

# (pattern of a command, where it runs): "here" = by this file's tests as written; "test:<file>::<name>
# [fragment, ...]" = by that test, whose source holds each fragment; "make:<target>" = a Makefile
# target; "not here: <why>".
RUN_BY: list[tuple[str, str]] = [
    (r"make demo", "make:demo"),
    (r"make test", "make:test"),
    (r"make install TORCH=.*", "make:install"),
    (r"python3\.11 -m venv \.venv", "make:install"),
    (r"\.venv/bin/pip install torch==\S+ --index-url https://download\.pytorch\.org/\S+",
     "not here: a CUDA build from download.pytorch.org (these machines reach PyPI only)"),
    (r"printf 'dataset: \{root: /data/AVSBench-semantic\}\\n' > site\.yaml", "here"),
    (r"printf 'captions: \{trust_remote_code: true\}\\n' >> site\.yaml", "here"),
    (r"(\.venv/bin/)?python -m ssp check-config --config configs/s4\.yaml site\.yaml", "here"),
    (r"(\.venv/bin/)?snakemake --cores 8 --configfile configs/(s4|ms3|avss)\.yaml site\.yaml", "here"),
    (r"\.venv/bin/snakemake table1 --cores 8 --configfile configs/avss\.yaml site\.yaml", "here"),
    (r"\.venv/bin/python -m ssp fetch-models --config configs/paper\.yaml( --dry-run)?",
     'test:tests/io/test_hub.py::test_dry_run_lists_sizes_and_writes_nothing "fetch-models" "--dry-run"'),
    (r"\.venv/bin/python -m ssp trust-code --config configs/paper\.yaml site\.yaml",
     'test:tests/io/test_hub.py::test_remote_code_is_trusted_by_its_hashes "trust-code"'),
    (r"mkdir -p ~/\.config/snakemake && cp -r profiles/site-example ~/\.config/snakemake/mysite", "here"),
    (r"\.venv/bin/snakemake --profile mysite --workflow-profile profiles/slurm --configfile configs/s4\.yaml site\.yaml",
     "here"),
    (r"\.venv/bin/snakemake models", "here"),
    (r"\.venv/bin/snakemake --cores 8", "make:demo"),
    (r"\.venv/bin/snakemake --cores 8 --forcerun preprocess", "here"),
    (r"\.venv/bin/snakemake --cores 8 results/synthavs/audio/00001\.h5", "here"),
    (r"\.venv/bin/snakemake plan", "here"),
    (r"\.venv/bin/snakemake -n", "here"),
    (r"\.venv/bin/python -m ssp (check-config|fetch-models) --config config\.yaml", "here"),
    (r"\.venv/bin/python -m ssp (synth|manifest) +--config config\.yaml", "here"),
    (r"\.venv/bin/python -m ssp stage frames --config config\.yaml --shard 00000", "here"),
    (r"\.venv/bin/python -m ssp summary +--config config\.yaml",
     'test:tests/test_cli.py::test_every_stage_of_one_shard_from_the_command_line "summary" "synth" "manifest"'),
    (r"\.venv/bin/python -m ssp evaluate --task s4 --root /data/AVSBench-semantic --predictions preds\.h5 "
     r"--split test --out metrics\.json",
     'test:tests/evaluation/test_evaluate.py::test_object_s4_layout_and_missing_videos "evaluate" "--out"'),
]


def docs_commands() -> list[tuple[str, str]]:
    """(file, command) for each line of the shell blocks of the README, configs/README.md and
    docs/: continuation lines joined, comments dropped."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    out.append((doc.relative_to(ROOT).as_posix(), re.sub(r"\s+", " ", command)))
    return out


def _where(command: str) -> str | None:
    return next((how for pattern, how in RUN_BY if re.fullmatch(pattern, command)), None)


def test_every_docs_command_is_run_somewhere():
    commands = docs_commands()
    assert len(commands) > 20
    missing = [f"{doc}: {command}" for doc, command in commands if _where(command) is None]
    assert not missing, "commands in the docs that nothing runs (add them to RUN_BY):\n" + "\n".join(missing)
    makefile = (ROOT / "Makefile").read_text()
    for how in {_where(c) for _, c in commands}:
        kind, _, what = how.partition(":")
        if kind == "make":
            assert re.search(rf"^{what}:", makefile, re.M), how
        elif kind == "test":
            node, *fragments = what.split(" ")
            path, name = node.split("::")
            tree = ast.parse((ROOT / path).read_text())
            func = next((f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == name), None)
            assert func is not None, f"{how}: no such test"
            source = ast.get_source_segment((ROOT / path).read_text(), func)
            for fragment in fragments:
                assert fragment.strip('"') in source, f"{how}: the test does not run {fragment}"
    unused = [p for p, _ in RUN_BY if not any(re.fullmatch(p, c) for _, c in commands)]
    assert not unused, f"RUN_BY entries no docs command matches any more: {unused}"


def _checkout_like(tmp_path: Path) -> Path:
    """A working folder laid out as the checkout is (the docs' relative paths hold there), its
    `.venv/bin` running this interpreter, and its own HOME (for ~/.config/snakemake)."""
    work = tmp_path / "work"
    (work / ".venv" / "bin").mkdir(parents=True)
    for name in ("Snakefile", "workflow", "configs", "profiles"):
        (work / name).symlink_to(ROOT / name)
    (work / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    for name, run in (("python", ""), ("snakemake", " -m snakemake")):
        wrapper = work / ".venv" / "bin" / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}"{run} "$@"\n')
        wrapper.chmod(0o755)
    (tmp_path / "home").mkdir()
    return work


def _sh(work: Path, command: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "SNAKEMAKE_PROFILE")}   # ~/.config
    env.update(HOME=str(work.parent / "home"), PYTHONUNBUFFERED="1",
               PATH=f"{work / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",   # `python`, `snakemake`
               HF_HUB_CACHE=str(work.parent / "empty-cache"), TORCH_HOME=str(work.parent / "empty-torch"))
    return subprocess.run(["bash", "-c", " ".join([command, *extra])], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)


def _of(pattern: str) -> list[str]:
    """The docs' commands that match ``pattern``, each once, in the docs' order."""
    seen: list[str] = []
    for _, command in docs_commands():
        if re.fullmatch(pattern, command) and command not in seen:
            seen.append(command)
    assert seen, pattern
    return seen


@pytest.mark.workflow
def test_the_paper_commands_of_the_docs_run_as_written(tmp_path, semantic_root):
    """The README's and docs' paper commands with their site.yaml: as written (the dataset at
    /data/AVSBench-semantic, absent here) check-config names what is missing; with site.yaml
    pointing at a dataset and a model cache, check-config passes, each setting plans its DAG
    locally and through a site profile copied from profiles/site-example, and table1 says which
    runs it waits for."""
    work = _checkout_like(tmp_path)
    (write_site,) = _of(r"printf 'dataset: .*")
    assert _sh(work, write_site).returncode == 0
    checks = _of(r"(\.venv/bin/)?python -m ssp check-config --config configs/s4\.yaml site\.yaml")
    for check in checks:
        proc = _sh(work, check)
        if not Path("/data/AVSBench-semantic").exists():   # a machine with AVSBench there passes this check
            assert proc.returncode == 1 and "'dataset.root': folder '/data/AVSBench-semantic' does not exist" in proc.stderr
    # the site's own values, as a user with AVSBench and the models fetched has them
    pointed = _pointed_at(_load("paper"), tmp_path, semantic_root)
    site = yaml.safe_load((work / "site.yaml").read_text())
    site["dataset"]["root"] = str(semantic_root)
    site |= {"hub": pointed["hub"]}
    (work / "site.yaml").write_text(yaml.safe_dump(site))
    (trust,) = _of(r"printf 'captions: .*")
    assert _sh(work, trust).returncode == 0
    for check in checks:
        proc = _sh(work, check)
        assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr[-3000:]
    for command in _of(r"(\.venv/bin/)?snakemake --cores 8 --configfile configs/(s4|ms3|avss)\.yaml site\.yaml"):
        proc = _sh(work, command, PAPER_DRY)
        assert proc.returncode == 0 and "manifest" in proc.stdout, f"{command}\n{proc.stderr[-3000:]}"
    (table1,) = _of(r"\.venv/bin/snakemake table1 .*")
    proc = _sh(work, table1, PAPER_DRY)
    assert proc.returncode != 0 and "table1_runs: results/s4: no metrics" in proc.stdout + proc.stderr
    (copy,) = _of(r"mkdir -p ~/\.config/snakemake .*")
    assert _sh(work, copy).returncode == 0
    assert (tmp_path / "home" / ".config" / "snakemake" / "mysite" / "config.yaml").is_file()
    (slurm,) = _of(r"\.venv/bin/snakemake --profile mysite .*")
    proc = _sh(work, slurm, PAPER_DRY)
    assert proc.returncode == 0 and "slurm_partition=cpu" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.workflow
def test_the_demo_commands_of_the_docs_run_as_written(tmp_path):
    """docs/install.md's commands on the demo's config.yaml: the checks, the planning (plan, then
    every shard's jobs in -n), fetching (nothing to fetch: the demo names no hub model), one stage
    of one shard from the command line, and the re-run commands (planned)."""
    work = _checkout_like(tmp_path)
    for command in _of(r"\.venv/bin/python -m ssp (check-config|fetch-models) --config config\.yaml"):
        proc = _sh(work, command)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    proc = _sh(work, *_of(r"\.venv/bin/snakemake models"), "--cores 1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (dry,) = _of(r"\.venv/bin/snakemake -n")
    before = _sh(work, dry)
    assert before.returncode == 0 and "preprocess" not in before.stdout   # the manifest decides the shards
    (plan,) = _of(r"\.venv/bin/snakemake plan")
    assert _sh(work, plan, "--cores 1").returncode == 0
    after = _sh(work, dry)
    assert after.returncode == 0 and "rule preprocess" in after.stdout and "rule vggish" in after.stdout
    for command in _of(r"\.venv/bin/snakemake --cores 8 (--forcerun preprocess|results/synthavs/audio/00001\.h5)"):
        proc = _sh(work, command, "-n")
        assert proc.returncode == 0 and "rule preprocess" in proc.stdout, f"{command}\n{proc.stderr[-3000:]}"
    for command in [*_of(r"\.venv/bin/python -m ssp (synth|manifest) +--config config\.yaml"),
                    *_of(r"\.venv/bin/python -m ssp stage frames .*")]:
        proc = _sh(work, command)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert (work / "results" / "synthavs" / "frames" / "00000.h5").is_file()
