"""Local model folders: nothing is downloaded; a missing file is an error that says what to put where."""
from __future__ import annotations

import hashlib
from pathlib import Path


class WeightsError(FileNotFoundError):
    """Model weights are missing; the message says which file to put where."""


def check_model_folder(folder: str | None, key: str, what: str) -> Path:
    """A local Hugging Face model folder must hold config.json and weights."""
    if not folder:
        raise WeightsError(f"'{key}' is not set: put {what} (config.json and model.safetensors or "
                           f"pytorch_model.bin) in a local folder and name that folder there")
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise WeightsError(f"'{key}': {path / 'config.json'} is missing; put {what} in {path}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise WeightsError(f"'{key}': no weights in {path} (expected model.safetensors or "
                           f"pytorch_model.bin of {what})")
    return path


def digest(folder: str | Path) -> str:
    """Short sha256 over the weight files of a model folder (provenance)."""
    h = hashlib.sha256()
    path = Path(folder)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
