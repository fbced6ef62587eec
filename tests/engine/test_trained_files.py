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
