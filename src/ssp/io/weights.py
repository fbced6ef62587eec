"""Local model folders: nothing is downloaded; a missing file is an error that says what to put where.

A model named by hub id or URL reaches the loaders as its fetched folder or file
(``ssp.io.hub.resolve_config``); one that reaches them as written was not fetched."""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)


class WeightsError(FileNotFoundError):
    """Model weights are missing; the message says which file to put where."""


# what the folder each config key names must hold, in the words of the errors about it
HOLDS = {
    "flow.perceiver.weights": "a snapshot of deepmind/optical-flow-perceiver",
    "model.mask2former": "a snapshot of facebook/mask2former-swin-base-ade-semantic",
    "model.clip": "a CLIP model or its vision tower (e.g. openai/clip-vit-base-patch16)",
    "model.text_encoder": ("a BLIP image-text retrieval model (e.g. Salesforce/blip-itm-base-coco), whose text "
                           "encoder is used, or that text encoder saved alone (a BlipTextModel)"),
}


def check_model_folder(folder: str | None, key: str, what: str | None = None, *, verify: bool = True) -> Path:
    """A local Hugging Face model folder must hold config.json and weights (``what``: HOLDS[key]);
    a fetched one is checked against the lock too (``verify``: before it loads, not when a config
    is checked)."""
    what = what or HOLDS[key]
    if not folder:
        raise WeightsError(f"'{key}' is not set: put {what} (config.json and model.safetensors or "
                           f"pytorch_model.bin) in a local folder and name that folder there, or name it by hub id")
    if str(folder).startswith("hf:") or str(folder).startswith(("https://", "http://")):
        from ssp.io.hub import FETCH_COMMAND

        raise WeightsError(f"'{key}': {folder} is not fetched: run {FETCH_COMMAND} where the Hub can be reached")
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise WeightsError(f"'{key}': {path / 'config.json'} is missing; put {what} in {path}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise WeightsError(f"'{key}': no weights in {path} (expected model.safetensors or "
                           f"pytorch_model.bin of {what})")
    if verify:
        from ssp.io.verify import verify_fetched

        verify_fetched(path, key)
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


def load_complete(cls, folder: str | Path, key: str, what: str | None = None, **kwargs):
    """``cls.from_pretrained`` from a local folder (nothing downloaded), refusing a checkpoint that
    leaves any of the model's parameters out: transformers would fill those with random values and
    only print a table, so a wrong folder (a whole BLIP model where its text encoder is wanted, say)
    would train or run on random weights unseen. Parameters re-made because the task changes
    their shape (``ignore_mismatched_sizes``: a new class head) are logged. ``what``: what the
    folder should hold, in the errors' words (default HOLDS[key])."""
    from ssp.io.hub import offline

    what = what or HOLDS[key]
    try:
        with offline():   # nothing asked of the Hub while loading, the process's settings as they were after
            model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                              **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:   # another architecture, other shapes
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"'{key}': {folder} does not load as {cls.__name__} ({reason}); it should hold "
                           f"{what}") from exc
    missing, unused = _declared_unused(model, sorted(info.get("missing_keys") or []))
    if unused:
        log.info("%s: %d parameter(s) not in %s, which transformers declares may be absent (unused by this "
                 "model's outputs): %s", key, len(unused), folder, ", ".join(unused[:6]) + (" ..." if len(unused) > 6 else ""))
    if missing:
        raise WeightsError(f"'{key}': {folder} has no weights for {len(missing)} parameter(s) of "
                           f"{type(model).__name__} (e.g. {', '.join(missing[:3])}), which would be random; "
                           f"it should hold {what}")
    remade = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys") or []]
    if remade:
        log.warning("%s: %d parameter(s) re-initialized because this task changes their shape: %s",
                    key, len(remade), ", ".join(map(str, remade[:6])) + (" ..." if len(remade) > 6 else ""))
    return model


def _declared_unused(model, missing: list[str]) -> tuple[list[str], list[str]]:
    """(missing, unused): the missing keys split by the ``_keys_to_ignore_on_load_missing`` patterns
    that transformers declares on the model's modules, each relative to its module. Checkpoints made
    by older transformers lack such parameters: Mask2Former's Swin backbone now holds a whole
    SwinModel whose final layer norm the backbone's feature maps never pass through (only the top
    class's own patterns are applied by transformers, so it reports them missing)."""
    patterns = [(f"{name}." if name else "", pattern) for name, module in model.named_modules()
                for pattern in getattr(type(module), "_keys_to_ignore_on_load_missing", None) or ()]
    unused = [k for k in missing if any(k.startswith(prefix) and re.search(pattern, k[len(prefix):])
                                        for prefix, pattern in patterns)]
    return [k for k in missing if k not in unused], unused
