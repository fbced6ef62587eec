"""The captions file of a shard (JSON lines): one line per video, ``{video_id, status: ok, q1, a1,
q2, a2, nouns, backend, model_id, settings}`` (and ``special_tokens_removed`` where the answers
held any) or ``{video_id, status: failed, stage, reason}``. Written by the captions stage
(``ssp.stages.captions``), read by the trainer and the run summary."""
from __future__ import annotations

import json
from pathlib import Path

from ssp.io.store import Failure


def kept_records(text: str, key: dict) -> dict[str, dict]:
    """video_id -> record, of a partial file's whole ``ok`` lines made with ``key`` (backend, model,
    settings): what a resumed stage keeps (a line cut short by a kill is dropped)."""
    done = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if rec.get("status") == "ok" and all(rec.get(k) == v for k, v in key.items()):
            done[rec["video_id"]] = rec
    return done


def exclusive(fh, path: Path) -> None:
    """This process the only writer of ``path`` (a second run writing the same shard's captions, from
    another working directory that Snakemake's lock does not see, is refused, not interleaved)."""
    import fcntl

    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"{path} is being written by another process (two runs on one results folder?); "
                           "let that run finish, or stop it") from None


def records(path: str | Path) -> list[dict]:
    """A captions file's records; a line that is not a whole record is an error naming the file and
    the line (the stage renames the file only once every line is written: such a file was cut or
    edited)."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if rec["status"] not in ("ok", "failed") or not isinstance(rec["video_id"], str):
                raise ValueError(f"status {rec['status']!r}")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}, line {n}: not a caption record ({type(exc).__name__}: {exc}); the file is "
                             "damaged: delete it and run snakemake again (its shard is captioned anew)") from None
        out.append(rec)
    return out


def read_captions(path: str | Path) -> dict[str, dict]:
    """video_id -> record, for the videos captioned successfully."""
    return {r["video_id"]: r for r in records(path) if r["status"] == "ok"}


def caption_failures(path: str | Path) -> list[Failure]:
    return [Failure(r["video_id"], r["stage"], r["reason"]) for r in records(path) if r["status"] == "failed"]
