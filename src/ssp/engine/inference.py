"""Predictions of a trained model in the project's predictions format.

One HDF5 file per (variant, split), one group per video id, at the ground truth's size:
  binary tasks:   ``scores`` float32 [T, H, W], the sounding class's share of the two class
                  scores, in [0, 1] (above 0.5 where AAVS's argmax picks sounding),
                  ``class_scores`` float32 [T, 2, H, W], background and sounding (AAVS's F-score
                  thresholds sigmoid(2 s_sounding - s_background): the precision validation
                  scores it in, so test and validation F agree to the last digit), and ``masks`` uint8 [T, H, W],
                  their argmax, 0 or 1 (a tie is background): a stage-1 model's masks are the
                  stepping stones and the pre-mask's stand-in at test, binary as AAVS saves them
  semantic task:  ``labels`` uint8 [T, H, W], class index 0..70 (0 = background)
File attributes name the model, the task, the test-time pre-mask choice and which training epoch
the model is (``model_epoch``, ``model_by``: its best validation epoch, or its last).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ssp.config import Config
from ssp.engine.build import build_model, make_dataset, model_inputs, select, to_device
from ssp.engine.checkpoint import read_trained
from ssp.engine.data import collate
from ssp.io.files import atomic_path
from ssp.io.hub import MODEL_KEYS
from ssp.io.store import ShardWriter, provenance
from ssp.model.ssp import SSPModel, class_scores, sounding_share
from ssp.stages import job_config
from ssp.variants import VARIANTS

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_video(model: SSPModel, batch: dict, premask_test: str, out_size: int = 224) -> torch.Tensor:
    """Per frame, the class scores [N, C, out_size, out_size] (binary: C = 2, background and
    sounding), post-processed in AAVS's order (``ssp.model.ssp.class_scores``)."""
    model.eval()
    outp = model(batch["frames"], batch["vggish"], **model_inputs(model, batch, training=False,
                                                                  premask_test=premask_test))
    cls, msk = outp.final
    return class_scores(cls, msk, model.size, out_size)


class Trained(NamedTuple):
    model: torch.nn.Module
    variant: str
    binary: bool
    selected: dict   # which epoch the model holds and why (empty for a model.pt that predates it)


def load_trained(cfg: Config, weights: str | Path, device, *, task: str | None = None) -> Trained:
    """A trained model (``model.safetensors`` with its ``model.json``, or an older ``model.pt``,
    read without unpickling: ``ssp.engine.checkpoint.read_trained``) on ``device``, built from
    ``cfg``'s model section; with ``task``, it must have been trained for that task."""
    state = read_trained(weights)
    if task is not None and state["task"] != task:
        raise ValueError(f"{weights}: a model for the {state['task']} task, where this run needs one for the "
                         f"{task} task (set train.task: {state['task']} to use it)")
    variant = VARIANTS[state["variant"]]
    binary = state["task"] == "binary"
    differ = model_section_differences(state.get("model_config"), cfg.raw["model"])
    if differ:
        raise ValueError(f"{weights} was trained with another model section than this config's "
                         f"({'; '.join(differ)}): use the model section of the run that trained it")
    if state.get("model_config") is None:
        log.warning("%s records no model section (an older model.pt): it cannot be compared with this config's",
                    weights)
    model = build_model(cfg, variant, binary=binary, stepping_stone=state["stepping_stone"],
                        tune=state.get("tune", "full"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not fit the network this config's model section builds: use the model "
                         f"section of the run that trained it. {str(exc)[:300]}") from None
    return Trained(model.to(device).eval(), state["variant"], binary, state.get("selected", {}))


# where the pretrained parts came from: their weights are in the trained model, whatever the path
SOURCE_KEYS = {k.split(".", 1)[1] for k in MODEL_KEYS if k.startswith("model.") and k != "model.tokenizer"}


def model_section_differences(trained: dict | None, configured: dict) -> list[str]:
    """'model.<key>: trained X, configured Y' for every key of the model section that differs
    (the network's shape, its input size, its tokenizer), before any weight is loaded. The sources
    of the pretrained parts are not compared (a trained model holds all its weights)."""
    if trained is None:
        return []
    keys = sorted((set(trained) | set(configured)) - SOURCE_KEYS)
    return [f"model.{k}: trained {trained.get(k)!r}, configured {configured.get(k)!r}"
            for k in keys if trained.get(k) != configured.get(k)]


def predict(cfg: Config, manifest: pd.DataFrame, weights: str | Path, split: str, out: str | Path, *,
            captions: dict | None = None, stage1: str | Path | None = None, premask_test: str | None = None,
            size: int | None = None, task: str | None = None, stage_dirs=None) -> list:
    cfg = job_config(cfg, "predict")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, variant_name, binary, selected = load_trained(cfg, weights, device, task=task)
    choice = premask_test or cfg.train.premask_test
    ds, dropped = make_dataset(cfg, select(manifest, cfg, split), VARIANTS[variant_name], binary=binary, stage1=stage1,
                               captions=captions, stage_dirs=stage_dirs)
    size = size or cfg.preprocess.image_size
    attrs = provenance("predict", cfg.settings(), split=split,
                       variant=variant_name, task="binary" if binary else "semantic", weights=str(weights),
                       premask_test=choice if VARIANTS[variant_name].premask else "not used",
                       models=json.dumps(cfg.model_provenance([k for k in MODEL_KEYS if k.startswith("model.")])),
                       **{f"model_{k}": selected[k] for k in ("epoch", "by") if k in selected})
    with ShardWriter(out, attrs) as w:
        for vid, why in dropped:
            w.fail(vid, "predict", why)
        for i in tqdm(range(len(ds)), desc=f"predict {variant_name} {split}"):
            batch = to_device(collate([ds[i]]), device)
            with torch.no_grad():
                res = predict_video(model, batch, choice, out_size=size)
            if binary:   # the sounding share (mIoU), both class scores (AAVS's F-score map), the argmax mask
                w.add(ds.rows.at[i, "video_id"], {"scores": sounding_share(res).cpu().numpy().astype(np.float32),
                                                  "class_scores": res.cpu().numpy().astype(np.float32),
                                                  "masks": res.argmax(1).cpu().numpy().astype(np.uint8)})
            else:
                w.add(ds.rows.at[i, "video_id"], {"labels": res.argmax(1).cpu().numpy().astype(np.uint8)})
    log.info("predictions of %s on %s: %d videos -> %s", variant_name, split, len(w.written), out)
    return w.failures


def write_pngs(predictions: str | Path, out_dir: str | Path) -> int:
    """PNG masks of a predictions file: ``<out>/<video>/<t>.png``, AVSBench style.

    Semantic predictions in the AVSBench colour palette; binary ones as 0/255 grey masks
    (foreground = probability > 0.5), as the AVSBench-object masks are stored.
    """
    import h5py
    from PIL import Image

    from ssp.io.palette import colorize

    out_dir = Path(out_dir)
    n = 0
    with h5py.File(predictions, "r") as h5:
        for vid in h5:
            (out_dir / vid).mkdir(parents=True, exist_ok=True)
            g = h5[vid]
            frames = colorize(g["labels"][()]) if "labels" in g else ((g["scores"][()] > 0.5) * 255).astype(np.uint8)
            for t, img in enumerate(frames):
                with atomic_path(out_dir / vid / f"{t}.png", sync=False) as tmp:
                    Image.fromarray(img).save(tmp, format="PNG")
                n += 1
    return n
