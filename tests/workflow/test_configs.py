"""configs/: the paper's S4, MS3 and AVSS settings, each extending configs/paper.yaml, read the same
way by check-config and by Snakemake."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, placeholder_model_folder, save_published_models
from test_workflow import run, write_config

from ssp.cli import main
from ssp.config import Config, ConfigError, merge, read, require_for_dag
from ssp.io import hub

CONFIGS = ROOT / "configs"
SETTINGS = ("s4", "ms3", "avss")
SOURCES = ("mask2former", "clip", "text_encoder", "tokenizer")


def _load(name: str) -> dict:
    """A shipped config file's own keys (not the files it extends)."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data.pop("extends", None)
    return data


def _pointed_at(paper: dict, tmp_path, root=None) -> dict:
    """configs/paper.yaml as a user has it after fetching: its /data path replaced by a folder, each
    model it names by hub id a snapshot in a Hugging Face cache (hub.cache) that holds what the
    checks look for (config.json and weights), VGGish's URL a file there, and MiniCPM-o trusted."""
    cache = tmp_path / "hf-cache"
    if root is None:   # a folder with AVSBench-semantic's index files (and no video)
        root = tmp_path / "AVSBench-semantic"
        root.mkdir(exist_ok=True)
        (root / "metadata.csv").write_text("vid,uid,s_min,s_sec,a_obj,split,label\n")
        (root / "label2idx.json").write_text("{}")
    return _point(paper, tmp_path, root, cache) | {"hub": {"cache": str(cache), "lock": str(tmp_path / "lock.json")}}


def _point(node, tmp_path, root, cache, key=""):
    if isinstance(node, dict):
        return {k: True if k == "trust_remote_code" else _point(v, tmp_path, root, cache, k) for k, v in node.items()}
    if isinstance(node, str) and node.startswith("/data/"):
        return str(root or tmp_path)
    if key == "reference":      # relative to paper.yaml's folder, as ssp.config.read resolves it
        return str(CONFIGS / node)
    model = hub.parse_hub(node)
    if model is not None:
        storage = cache / model.folder_name
        commit = model.revision if len(model.revision) == 40 else "0" * 40
        if commit != model.revision:
            (storage / "refs").mkdir(parents=True, exist_ok=True)
            (storage / "refs" / model.revision).write_text(commit)
        placeholder_model_folder(storage / "snapshots" / commit)
        if key == "tokenizer":   # BLIP's repository holds its vocabulary beside the model
            (storage / "snapshots" / commit / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    elif hub.is_url(node):
        (cache / "checkpoints").mkdir(parents=True, exist_ok=True)
        (cache / "checkpoints" / node.rsplit("/", 1)[1]).write_bytes(b"")
    return node


def _snapshot(tmp_path, repo: str) -> Path:
    return next((tmp_path / "hf-cache" / ("models--" + repo.replace("/", "--")) / "snapshots").iterdir())


@pytest.mark.parametrize("setting", SETTINGS)
def test_paper_settings_take_nothing_from_the_demo_config(tmp_path, setting):
    """configs/paper.yaml + a setting is the same run over config.yaml as alone: even merged over
    it, the demo's tiny network, DIS flow, synthetic captions and short schedule would not leak in.
    The network is the paper's."""
    overlay = merge(_pointed_at(_load("paper"), tmp_path), _load(setting))
    alone = Config.from_dict(overlay)
    over_demo = Config.from_dict(merge(yaml.safe_load((ROOT / "config.yaml").read_text()), overlay))
    assert dataclasses.replace(over_demo, synthetic=alone.synthetic) == alone
    require_for_dag(alone)
    defaults = Config.from_dict({})
    assert {k: v for k, v in alone.model.raw.items() if k not in SOURCES} == \
        {k: v for k, v in defaults.model.raw.items() if k not in SOURCES}
    assert alone.flow.backend == "perceiver" and alone.captions.backend == "minicpm-o"
    assert alone.train.num_points == defaults.train.num_points and alone.resources.use_gpu
    # AAVS's training, which the demo (a random network) does not use; its AVSS script does not clip
    assert (defaults.train.tune, defaults.train.grad_clip) == ("adapters", 0.01)
    assert (alone.train.tune, alone.train.grad_clip) == ("adapters", None if setting == "avss" else 0.01)
    expected = {"s4": ("binary", ("v1s",), 30, 15), "ms3": ("binary", ("v1m",), 30, 15),
                "avss": ("semantic", ("v1s", "v1m", "v2"), 60, 20)}[setting]
    t = alone.train
    assert (t.task, t.subsets, t.epochs, t.lr_decay_epoch) == expected
    assert (t.seed, t.precision, t.shuffle) == (3407, "fp32", setting != "avss")   # AAVS's seed and fp32
    assert alone.dataset.subsets == t.subsets and alone.dataset.name == setting


def test_paper_configs_as_shipped_stop_with_what_to_edit(tmp_path, monkeypatch, capsys):
    """Unedited, the files name everything to do at once (the dataset's folder, each model to fetch
    with the command, MiniCPM-o's trust, which is the user's to give); pointed at a dataset with
    the models fetched, they are valid."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    shipped = [str(CONFIGS / "paper.yaml"), str(CONFIGS / "s4.yaml")]
    assert main(["check-config", "--config", *shipped]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert "9 problems:" in lines[0]
    for needle in ("'dataset.root': folder '/data/AVSBench-semantic' does not exist",
                   "'flow.perceiver.weights': hf:deepmind/optical-flow-perceiver@dd4bf607", "'vggish.weights': https://",
                   "'captions.model': hf:openbmb/MiniCPM-o-2_6@4a25f999", "'captions.trust_remote_code' is false",
                   "'model.mask2former': hf:facebook/mask2former-swin-base-ade-semantic@main is not fetched",
                   "'model.clip': hf:openai/clip-vit-base-patch16@57c21647", "'model.text_encoder': hf:Salesforce",
                   "'model.tokenizer': hf:Salesforce/blip-itm-base-coco@bed8ad38"):
        assert sum(needle in line for line in lines) == 1, needle
    assert all(f"python -m ssp fetch-models --config {' '.join(shipped)}" in line for line in lines if "not fetched" in line)
    with pytest.raises(ConfigError, match="'dataset.root': folder '/data/AVSBench-semantic' does not exist"):
        Config.from_dict(merge(_load("paper"), _load("s4")))
    pointed = _pointed_at(_load("paper"), tmp_path)
    with pytest.raises(ConfigError, match="'captions.trust_remote_code' is false"):
        Config.from_dict(merge(pointed | {"captions": {**pointed["captions"], "trust_remote_code": False}},
                               _load("s4")))
    # the command line merges several files as Snakemake does
    paper = write_config(tmp_path / "paper.yaml", pointed)
    assert main(["check-config", "--config", str(paper), str(CONFIGS / "ms3.yaml")]) == 0
    assert "ms3.yaml: valid (dataset 'ms3'" in capsys.readouterr().out
    (_snapshot(tmp_path, "openai/clip-vit-base-patch16") / "model.safetensors").unlink()
    assert main(["check-config", "--config", str(paper), str(CONFIGS / "ms3.yaml")]) == 1


@pytest.mark.workflow
def test_a_setting_alone_reads_its_base_and_both_entry_points_list_the_same_problems(tmp_path, monkeypatch, capsys):
    """`--configfile configs/s4.yaml` alone (paper.yaml not named) is the paper's S4 run, not the
    demo's synthetic data under results/s4 (the demo's config.yaml, in the working folder, is not
    read when a config file is named); check-config and `snakemake -n` refuse it with the same
    list, every problem at once (the dataset's folder, the models to fetch with the command naming
    this file, MiniCPM-o's trust)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    monkeypatch.chdir(tmp_path)   # where snakemake runs below, away from the checkout
    s4 = str(CONFIGS / "s4.yaml")
    assert main(["check-config", "--config", s4]) == 1
    listed = [line.strip() for line in capsys.readouterr().err.splitlines() if line.strip().startswith("- ")]
    assert len(listed) == 9 and any("'dataset.root': folder '/data/AVSBench-semantic'" in p for p in listed)
    assert not any("studies.reference" in p for p in listed)   # beside paper.yaml, from any working folder
    assert any(f"run python -m ssp fetch-models --config {s4} " in p for p in listed)
    proc = run(["-n", "--configfile", s4], tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "9 problems:" in out and "rule synth" not in out
    assert all(p in out for p in listed), out[-3000:]
    # a file of the site's own settings, named after the setting, is not undone by its base
    site = write_config(tmp_path / "site.yaml", {"dataset": {"root": str(tmp_path / "avsbench")}})
    assert main(["check-config", "--config", s4, str(site)]) == 1
    assert str(tmp_path / "avsbench") in capsys.readouterr().err


@pytest.mark.workflow
def test_five_problems_are_one_list_from_both_entry_points(tmp_path, monkeypatch, capsys):
    """configs/s4.yaml with a site file whose dataset folder is empty (no metadata.csv, no
    label2idx.json), two models not fetched and MiniCPM-o not trusted: check-config and
    `snakemake -n` list the same five problems at once, before any rule, each command in them
    naming the files given (no placeholder)."""
    (tmp_path / "empty").mkdir()
    pointed = _pointed_at(_load("paper"), tmp_path, tmp_path / "empty")
    for repo in ("openai/clip-vit-base-patch16", "facebook/mask2former-swin-base-ade-semantic"):
        shutil.rmtree(_snapshot(tmp_path, repo).parent.parent)
    site = write_config(tmp_path / "site.yaml", {"dataset": {"root": str(tmp_path / "empty")}, "hub": pointed["hub"],
                                                 "captions": {"trust_remote_code": False}})
    monkeypatch.chdir(tmp_path)
    files = [str(CONFIGS / "s4.yaml"), str(site)]
    assert main(["check-config", "--config", *files]) == 1
    err = capsys.readouterr().err
    listed = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert "5 problems:" in err and len(listed) == 5, err
    for needle in ("empty/metadata.csv' does not exist", "empty/label2idx.json' does not exist", "'model.clip': hf:",
                   "'model.mask2former': hf:", "'captions.trust_remote_code' is false"):
        assert sum(needle in p for p in listed) == 1, needle
    assert "<your config files>" not in err and f"trust-code --config {' '.join(files)}" in err
    proc = run(["-n", "--configfile", *files], tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "5 problems:" in out and "rule " not in out, out[-3000:]
    assert all(p in out for p in listed), out[-3000:]


def test_avss_setting_plans_the_paper_dag_and_table1(tmp_path, semantic_root):
    """The AVSS setting on an AVSBench-semantic root plans Perceiver IO flow, MiniCPM-o captions,
    the stage-1, baseline and full models and Table 1 with the S4 and MS3 runs' metrics beside it;
    without those runs, Table 1 says which run is missing."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    paper = write_config(tmp_path / "paper.yaml", _pointed_at(_load("paper"), tmp_path, semantic_root))
    avss = CONFIGS / "avss.yaml"
    # before the manifest, the plan stops at it; `snakemake plan` writes it alone, and the plan
    # then holds every shard's jobs (docs/install.md)
    early = run(["-n", "--quiet", "rules", "--configfile", str(paper), str(avss)], tmp_path).stdout
    early = {p[0] for p in map(str.split, early.splitlines()) if len(p) == 2 and p[1].isdigit()}
    assert "manifest" in early and not {"flow", "vggish", "preprocess"} & early, early
    run(["plan", "--cores", "1", "--configfile", str(paper), str(avss)], tmp_path)
    assert (tmp_path / "results" / "avss" / "manifest.csv").exists() and not (tmp_path / "results" / "avss" / "frames").exists()
    proc = run(["table1", "-n", "--configfile", str(paper), str(avss)], tmp_path, check=False)
    assert proc.returncode != 0 and "studies.table1_runs: results/s4: no metrics" in proc.stdout + proc.stderr
    for run_name in ("s4", "ms3"):
        for v in ("baseline", "full"):
            f = tmp_path / "results" / run_name / "metrics" / v / f"{run_name}_test.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps({"task": run_name, "split": "test", "miou": 0.5, "fscore": 0.6}))
    out = run(["table1", "-n", "--quiet", "rules", "--configfile", str(paper), str(avss)], tmp_path).stdout
    jobs = {p[0]: int(p[1]) for p in map(str.split, out.splitlines()) if len(p) == 2 and p[1].isdigit()}
    assert jobs["train"] == 3 and jobs["evaluate"] == 2 and jobs["table1"] == 1   # stage1, baseline, full
    assert jobs["flow"] == jobs["captions"] == jobs["vggish"] == 1
    # every stage-2 training validates on the stage-1 masks of the val split (AAVS's stones in eval mode)
    plan = run(["table1", "-n", "--configfile", str(paper), str(avss)], tmp_path).stdout
    blocks = [b for b in plan.split("\nrule ") if b.startswith("train:")]
    stage2 = [b for b in blocks if "variant=stage1" not in b]
    assert len(stage2) == 2 and all("results/avss/predictions/stage1/val.h5" in b for b in stage2), plan[-3000:]


@pytest.mark.workflow
def test_paper_s4_setting_runs_on_weights_in_the_published_formats(tmp_path, monkeypatch):
    """configs/paper.yaml + s4.yaml run end to end on models in the forms users hold: Perceiver IO
    flow, whole CLIP and BLIP retrieval models named by hub id, fetched by `snakemake models` from
    a hub (a fake one on 127.0.0.1) and read offline; a Mask2Former saved by transformers 4.x (as
    the published one was) from a local folder; AAVS's adapters through both phases. Tiny sizes,
    an AVSBench-semantic layout written by the SynthAVS generator, captions from a file. The
    shards and the trained models record the commit of each model they come from."""
    from fake_hub import FakeHub

    from ssp.datasets.synthavs import generate

    data = tmp_path / "AVSBench-semantic"
    generate(data, seed=1, videos={"v1s": 8, "v1m": 0, "v2": 0}, train=0.5, val=0.25, image_size=48,
             classes=("dog", "guitar", "car"), max_objects=2, progress=False)
    models = save_published_models(tmp_path / "models", flow=True)
    captions = tmp_path / "captions.json"
    uids = [line.split(",")[1] for line in (data / "metadata.csv").read_text().splitlines()[1:]]
    captions.write_text(json.dumps({u: {"a1": "a dog barks at a guitar", "a2": "dog"} for u in uids}))
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    here = write_config(tmp_path / "here.yaml", {
        "dataset": {"root": str(data)}, "shards": {"size": 8}, "preprocess": {"image_size": 48},
        "flow": {"perceiver": {"weights": "hf:tiny/flow", "batch_size": 4}}, "vggish": {"weights": "random"},
        "captions": {"backend": "file", "file": str(captions), "model": None},
        "model": {"mask2former": str(models["mask2former"]),
                  "clip": f"hf:tiny/clip@{'c' * 40}", "text_encoder": "hf:tiny/blip@v1",
                  "tokenizer": "hf:tiny/blip@v1", "size": 32,
                  "num_queries": 4, "hidden_dim": 32, "encoder_layers": 1, "decoder_layers": 2, "heads": 2,
                  "max_text_len": 8},
        "train": {"epochs": 2, "lr_decay_epoch": 1, "num_points": 64, "num_workers": 0},
        "resources": {"use_gpu": False},
        "hub": {"cache": str(tmp_path / "hf-cache"), "lock": str(tmp_path / "models.lock.json")}})
    configs = ["--configfile", str(CONFIGS / "paper.yaml"), str(CONFIGS / "s4.yaml"), str(here)]
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        server.add_folder("tiny/flow", models["flow"], "f" * 40)
        server.add_folder("tiny/clip", models["clip"], "c" * 40, ref=None)
        server.add_folder("tiny/blip", models["blip"], "b" * 40, ref="v1")
        run(["models", "--cores", "1", *configs], tmp_path)
    run(["--cores", "2", *configs], tmp_path)       # the hub is gone: every job reads the cache
    s4 = tmp_path / "results" / "s4"
    for variant in ("baseline", "full"):
        metrics = json.loads((s4 / "metrics" / variant / "s4_test.json").read_text())
        assert 0 <= metrics["miou"] <= 1 and metrics["task"] == "s4"
        log = (s4 / "logs" / "train" / f"{variant}.log").read_text()
        assert "adapters, phase 1" in log and "AAVS phase 2: the Swin adapters are trained too" in log
        assert "swin.layernorm" in log and "transformers declares may be absent" in log
    import h5py

    with h5py.File(s4 / "flow" / "00000.h5") as h5:                      # Perceiver IO from the cache
        assert json.loads(h5.attrs["params"])["flow.backend"] == "perceiver"
        assert json.loads(h5.attrs["models"]) == {"flow.perceiver.weights": f"hf:tiny/flow@{'f' * 40}"}
    trained = json.loads((s4 / "train" / "full" / "model.json").read_text())["models"]
    assert trained["model.clip"] == f"hf:tiny/clip@{'c' * 40}" and trained["model.text_encoder"] == f"hf:tiny/blip@{'b' * 40}"
    assert trained["model.tokenizer"] == f"hf:tiny/blip@{'b' * 40}"
    assert trained["model.mask2former"].endswith("transformers-4.44/mask2former")
    assert "AAVS's adapters of a frozen Mask2Former" in (s4 / "report" / "summary.md").read_text()
    table = (s4 / "report" / "table2.md").read_text()                  # the paper's figures beside ours
    assert "(ref.)" in table and "85.4" in table
    # BLIP's branch moves on and is fetched anew (--update): what reads BLIP re-runs, the flow does not
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        server.add_folder("tiny/flow", models["flow"], "f" * 40)
        server.add_folder("tiny/clip", models["clip"], "c" * 40, ref=None)
        server.add_folder("tiny/blip", models["blip"], "d" * 40, ref="v1")
        assert main(["fetch-models", "--update", "--config", str(tmp_path / "config.yaml"), *configs[1:]]) == 0
    plan = run(["-n", "--quiet", "rules", *configs], tmp_path).stdout
    jobs = {p[0]: int(p[1]) for p in map(str.split, plan.splitlines()) if len(p) == 2 and p[1].isdigit()}
    assert jobs.get("train") == 2 and "flow" not in jobs, plan


def test_paper_config_prints_the_published_figures():
    """configs/paper.yaml names the paper's published figures (its Tables 1 and 2), shipped in
    configs/published/, so every table of the paper's runs sets them beside ours."""
    from ssp.reporting.tables import read_reference

    reference = read([CONFIGS / "s4.yaml"])["studies"]["reference"]   # beside paper.yaml, from any folder
    assert Path(reference) == CONFIGS / "published" / "ssp-paper.csv"
    published = read_reference(reference)
    assert published[("full", "s4", "test")]["miou"] == 85.4 and published[("baseline", "avss", "test")]["fscore"] == 53.2
    assert {v for v, t, s in published if t == "ms3"} >= {"baseline", "premask", "full", "COMBO"}
    shared = ROOT.parent / "shared" / "paper" / "published.csv"
    if shared.is_file():                                              # the copy is the paper's file
        assert Path(reference).read_text() == shared.read_text()
