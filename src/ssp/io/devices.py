"""The compute device a stage's ``device`` setting names."""
from __future__ import annotations


def pick_device(device: str) -> str:
    """``auto``: CUDA when present, else the CPU; any other value as it is (``cpu``, ``cuda:1``)."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
