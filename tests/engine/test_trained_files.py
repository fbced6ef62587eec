"""Trained models and checkpoints travel safely: safetensors + JSON, and nothing unpickled."""
import json

import pytest
import torch

from ssp.engine.checkpoint import TrainedModelError, read_checkpoint, read_trained, write_trained


class _RunsCode:
    """A pickle that runs a command when it is loaded, as a shared model.pt could."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_trained_model_round_trip(tmp_path):
    weights = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    weights["tied"] = weights["a.weight"]              # shared memory: written as two tensors
    meta = {"variant": "full", "task": "binary", "stepping_stone": False, "selected": {"epoch": 3, "by": "x"}}
    write_trained(tmp_path / "model.safetensors", weights, meta)
    assert json.loads((tmp_path / "model.json").read_text())["variant"] == "full"
    state = read_trained(tmp_path / "model.safetensors")
    assert state["selected"] == {"epoch": 3, "by": "x"} and state["format"] == "ssp-trained-1"
    assert all(torch.equal(state["model"][k], v) for k, v in weights.items())
    (tmp_path / "model.json").unlink()
    with pytest.raises(TrainedModelError, match="model.json is missing"):
        read_trained(tmp_path / "model.safetensors")


def test_an_older_model_pt_loads_without_unpickling_code(tmp_path):
    """An older run's model.pt (plain values and tensors) still loads; one planted with a pickle that
    would run code is refused, naming the file, and the code does not run."""
    good = tmp_path / "old" / "model.pt"
    good.parent.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "variant": "baseline", "task": "binary", "stepping_stone": False,
                "model_config": {"size": 64}, "selected": {"epoch": 1}}, good)
    assert read_trained(good)["variant"] == "baseline"
    marker = tmp_path / "code-ran"
    bad = tmp_path / "bad" / "model.pt"
    bad.parent.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "variant": "baseline", "payload": _RunsCode(marker)}, bad)
    with pytest.raises(TrainedModelError, match=rf"{bad}: refused"):
        read_trained(bad)
    assert not marker.exists()
    with open(bad, "rb"):   # the pickle is real: unpickled without weights_only, it would have run
        torch.load(bad, weights_only=False)
    assert marker.exists()


def test_a_resume_checkpoint_with_code_is_not_resumed(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "rng": _RunsCode(marker)}, path)
    assert read_checkpoint(path) is None and not marker.exists()


_WRITER = """
import sys, torch
from ssp.engine.checkpoint import save_checkpoint

model = torch.nn.Linear(256, 256)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
with torch.no_grad():
    model.weight.fill_(float(sys.argv[2]))
for step in range(int(sys.argv[3])):
    save_checkpoint(__import__("pathlib").Path(sys.argv[1]), model, opt, sched, 0, step, step)
"""


def test_two_runs_writing_one_checkpoint_never_tear_it(tmp_path):
    """Two runs training into the same results folder (from two working directories, which
    Snakemake's lock does not see): every checkpoint read between their writes is one of the two,
    whole."""
    import subprocess
    import sys

    path = tmp_path / "checkpoint.pt"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(v), "25"]) for v in (1, 2)]
    seen = set()
    while any(p.poll() is None for p in procs):
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)   # raises on a torn file
            seen.add(float(state["model"]["weight"][0, 0]))
    assert [p.wait() for p in procs] == [0, 0]
    assert seen <= {1.0, 2.0} and float(torch.load(path, weights_only=True)["model"]["weight"][0, 0]) in (1.0, 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]          # no temporary file left


def test_an_unreadable_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:3000])                                 # cut short
    with caplog.at_level("WARNING"):
        assert read_checkpoint(path) is None
    aside = [p.name for p in tmp_path.iterdir()]
    assert not path.exists() and len(aside) == 1 and aside[0].startswith("checkpoint.pt.unreadable-")
    assert "checkpoint.pt cannot be read" in caplog.text and aside[0] in caplog.text
