"""VGGish stage over one shard: audio shard -> vggish shard.

Per video: ``vggish`` float32 [T, 128] and ``valid`` bool [T] (padded steps of AVSS-style
videos are invalid). Examples of all videos of the shard are embedded in shared batches.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ssp.audio.vggish import embed, load_vggish, log_mel_examples, pad_to_T
from ssp.config import Config
from ssp.datasets.manifest import shard_rows
from ssp.io.devices import pick_device
from ssp.io.store import ShardReader, ShardWriter, provenance
from ssp.stages import job_config

log = logging.getLogger(__name__)


def run_vggish(manifest: str | Path | pd.DataFrame, shard: str, audio_path: str | Path, out: str | Path,
               cfg: Config, model=None) -> list:
    """VGGish embeddings [T, 128] of every video of the shard (``model``: one built already)."""
    cfg = job_config(cfg, "vggish")
    vc = cfg.vggish
    if vc.weights is None and model is None:
        from ssp.config import ConfigError

        raise ConfigError("'vggish.weights' is not set (path of vggish-10086976.pth, or 'random')")
    device = pick_device(vc.device)
    if model is None:
        model, weights_id = load_vggish(vc.weights, vc.seed, device)
    else:
        weights_id = "in-memory"
    audio = ShardReader(audio_path)
    rows = shard_rows(manifest, shard)
    attrs = provenance("vggish", cfg.settings(), dataset=cfg.dataset.name,
                       shard=shard, weights=weights_id, random_weights=weights_id.startswith("random"),
                       models=json.dumps(cfg.model_provenance(["vggish.weights"])))
    with ShardWriter(out, attrs) as w:
        todo = []
        for row in rows.itertuples(index=False):
            if row.video_id not in audio:
                w.fail(row.video_id, "vggish", f"no entry in {audio.path.name} of the audio stage (skipped there)")
                continue
            a = audio.read(row.video_id)["wav"]
            n_valid = int(audio.attrs(row.video_id)["n_valid_samples"])
            todo.append((row, log_mel_examples(a[:n_valid])))
        examples = np.concatenate([e for _, e in todo]) if todo else np.zeros((0, 96, 64), np.float32)
        emb = embed(model, examples, vc.batch_size, device)
        k = 0
        for row, ex in todo:
            feats, valid = pad_to_T(emb[k:k + len(ex)], row.n_frames, row.subset)
            k += len(ex)
            if not valid.any():
                w.fail(row.video_id, "vggish", "audio shorter than one 0.96 s example")
                continue
            w.add(row.video_id, {"vggish": feats, "valid": valid}, {"n_examples": len(ex)})
    log.info("vggish shard %s: %d videos (%d examples), weights %s", shard, len(w.written), len(examples), weights_id)
    return w.failures
