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
            assert "default" in sub, f"{where}{key} has no default"
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

    cfg = Config.from_dict({"vggish": {"weights": "random"}, "studies": {"reference": str(tmp_path / "paper.csv")}})
    with pytest.raises(ConfigError, match="'studies.reference'.*paper.csv.*does not exist"):
        require_for_dag(cfg)
    (tmp_path / "paper.csv").write_text("variant,task,split,miou,fscore\n")
    require_for_dag(cfg)
