"""Captions stage over one shard: frames -> captions JSONL, resumable. A captioning model sees
each video's 1-fps frames at their own resolution, decoded from the source (``captions.frames:
native``, as MiniCPM-o-2.6 takes video); the frames shard says which videos exist.

The captions file's format is ``ssp.io.captions``'s. Lines are appended to ``<out>.partial`` as
they are made; a re-run keeps the lines made with the same backend, model and settings and skips
those videos; the file is renamed to ``<out>`` when the shard is done.

``caption_shard`` runs the stage in this process, or with ``captions.python`` in another Python
interpreter: MiniCPM-o's own code needs an older transformers than the rest of the pipeline, so
without conda it runs in an environment of its own (``make minicpmo-env``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ssp import env_with_package
from ssp.config import UndeclaredSetting
from ssp.datasets.manifest import shard_rows
from ssp.io import logs
from ssp.io.captions import caption_failures, exclusive, kept_records
from ssp.io.media import MediaError, load_frame_files, sample_video_frames
from ssp.io.store import Failure, ShardError, ShardReader
from ssp.prompts.captioners import parse_nouns, transformers_version
from ssp.stages import job_config

log = logging.getLogger("ssp.stages.captions")   # also when run as `python -m ssp.stages.captions`


def video_frames(row, frames: ShardReader, captioner):
    """What the captioner sees of a video: the 1-fps frames the clip has (a clip shorter than T
    seconds is padded to T for the network by repeating its last frame; the captioner gets no
    copies), at their own resolution, decoded from the source (a captioning model with
    ``captions.frames: native``: the frames shard holds only squares), or the frames shard's."""
    if not getattr(captioner, "native_frames", False):
        n_valid = frames.attrs(row.video_id).get("n_valid")        # the frames stage records it
        shard = frames.read(row.video_id, ("frames",))["frames"]
        return shard[:max(int(n_valid), 1)] if n_valid is not None else shard
    if row.source == "video":
        decoded, n_valid = sample_video_frames(row.video_path, row.n_frames)
        return decoded[:max(n_valid, 1)]
    return load_frame_files(row.frame_paths)


def run_captions(manifest: str | Path | pd.DataFrame, shard: str, frames_path: str | Path, out: str | Path,
                 captioner) -> list[Failure]:
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    key = {"backend": captioner.name, "model_id": captioner.model_id, "settings": captioner.settings()}
    frames = ShardReader(frames_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    with open(partial, "a+") as fh:
        exclusive(fh, partial)
        fh.seek(0)
        done = kept_records(fh.read(), key)
        if done:
            log.info("captions %s: resuming, %d videos already captioned", shard, len(done))
        fh.seek(0)
        fh.truncate()
        fh.write("".join(json.dumps(r) + "\n" for r in done.values()))
        for row in tqdm(list(shard_rows(manifest, shard).itertuples(index=False)), desc=f"captions {shard}"):
            vid = row.video_id
            if vid in done:
                continue
            try:
                if vid not in frames:
                    raise LookupError(f"no entry in {frames.path.name} of the frames stage (skipped there)")
                q1, a1, q2, a2 = captioner.caption(vid, video_frames(row, frames, captioner))
                rec = {"video_id": vid, "status": "ok", "q1": q1, "a1": a1, "q2": q2, "a2": a2,
                       "nouns": parse_nouns(a2), **key}
                removed = getattr(captioner, "last_removed", None)
                if removed:
                    rec["special_tokens_removed"] = removed
            except (ShardError, UndeclaredSetting):   # a damaged frames shard; a bug in the stage
                raise
            except Exception as exc:   # one video's failure, whatever the model's code raised, ends no stage
                reason = _reason(exc)
                log.warning("captions: skipped %s: %s", vid, reason)
                failures.append(Failure(vid, "captions", reason))
                rec = {"video_id": vid, "status": "failed", "stage": "captions", "reason": reason}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, out)   # while this process still holds the file
    return failures


def _reason(exc: Exception) -> str:
    """A failure's reason: the message, with the exception's type where the message alone says
    little (a model's AssertionError often has none)."""
    known = (LookupError, FileNotFoundError, ValueError, RuntimeError, MediaError)
    text = str(exc).strip()
    return text if isinstance(exc, known) and text else f"{type(exc).__name__}: {text or 'no message'}"


def caption_shard(manifest: str | Path | pd.DataFrame, shard: str, frames_path: str | Path, out: str | Path,
                  cfg) -> list[Failure]:
    """One shard's captions (``run_captions``) with the captioner ``cfg`` names: in this process,
    or, when ``captions.python`` is set, in that interpreter (this package's source on its path;
    the manifest given as its file; its messages go to this process's log file too). Returns the
    videos that failed, as the file records them."""
    cfg = job_config(cfg, "captions")
    python = cfg.captions.python
    if not python:
        from ssp.prompts.captioners import make_captioner

        return run_captions(manifest, shard, frames_path, out, make_captioner(cfg, cfg.dataset_root))
    if isinstance(manifest, pd.DataFrame):
        raise TypeError("caption_shard with captions.python reads the manifest from its file: give its path")
    exe = shutil.which(python) or python       # the config's check made sure it runs
    config = copy.deepcopy(cfg.raw)
    config["captions"]["python"] = None
    log_file = logs.log_file()
    job = {"config": config, "manifest": str(manifest), "shard": shard, "frames": str(frames_path),
           "out": str(out), "log": str(log_file) if log_file else None}
    env = env_with_package()
    log.info("captions %s: running in %s", shard, exe)
    for h in logging.getLogger().handlers:
        h.flush()
    rc = subprocess.run([exe, "-m", "ssp.stages.captions", json.dumps(job)], env=env).returncode
    if rc:
        raise RuntimeError(f"captions {shard}: the stage failed in {exe} (exit status {rc}); its messages "
                           f"are above{' and in ' + str(log_file) if log_file else ''}")
    return caption_failures(out)


def _main(argv: list[str]) -> int:
    """``python -m ssp.stages.captions JOB``: the other interpreter's side of ``caption_shard``."""
    from ssp.config import Config

    job = json.loads(argv[0])
    logs.setup(job["log"], append=True)
    try:
        cfg = Config.from_dict(job["config"])
        log.info("captions %s: %s (transformers %s)", job["shard"], sys.executable,
                 transformers_version() or "not installed")
        caption_shard(job["manifest"], job["shard"], job["frames"], job["out"], cfg)
    except Exception:
        log.exception("captions %s failed in %s", job["shard"], sys.executable)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
