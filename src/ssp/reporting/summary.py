"""The run's summary: what every stage wrote, and every video skipped with its reason."""
from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from ssp.io.files import atomic_path, write_text
from ssp.io.store import ShardReader


def _notes(stage: str, path: str | Path) -> set[str]:
    """Warnings a reader of the results must see (random weights, synthetic captions)."""
    if str(path).endswith(".jsonl"):
        from ssp.io.captions import read_captions

        recs = list(read_captions(path).values())
        if any(r["backend"] == "synthetic" for r in recs):
            return {"Captions are SYNTHETIC: written from the SynthAVS scene descriptions, not by a model."}
        return set()
    attrs = ShardReader(path).attrs()
    if attrs.get("random_weights"):
        return {f"{stage}: features come from RANDOM weights ({attrs['weights']}), as the config asks; "
                "they are not AudioSet features."}
    return set()


def collect(stage_shards: dict[str, list[str | Path]]) -> tuple[dict[str, dict], list[dict], list[str]]:
    """Per-stage counts, the failure rows of every shard file given, and notes."""
    counts, failures, notes = {}, [], set()
    for stage, paths in stage_shards.items():
        written = failed = 0
        decoders: dict[str, int] = {}
        for p in paths:
            if str(p).endswith(".jsonl"):
                from ssp.io.captions import caption_failures, read_captions

                n_ok, fails = len(read_captions(p)), caption_failures(p)
            else:
                reader = ShardReader(p)
                n_ok, fails = len(reader.videos()), reader.failures()
                for vid in reader.videos():   # which decoder read each video (frames, audio)
                    name = reader.attrs(vid).get("decoder")
                    if name:
                        decoders[str(name)] = decoders.get(str(name), 0) + 1
                reader.close()
            written += n_ok
            failed += len(fails)
            notes |= _notes(stage, p)
            failures.extend(dict(asdict(f), shard=Path(p).name.split(".")[0]) for f in fails)
        counts[stage] = {"shards": len(paths), "written": written, "failed": failed, "decoders": decoders}
    return counts, failures, sorted(notes)


def models_note(cfg) -> str | None:
    """Where the models come from, when another run trained them (predict.models_from)."""
    if cfg.predict.models_from:
        return f"The models are those of {cfg.predict.models_from} (predict.models_from), not trained in this run."
    return None


def training_note(cfg) -> str:
    """What this run's training changes (train.tune)."""
    t = cfg.train
    if t.tune == "full":
        return "Training: every weight is trained (train.tune: full)."
    phase2 = (f"from epoch {t.lr_decay_epoch + 1}, the first learning-rate decay, the Swin adapters too"
              if t.lr_decay_epoch < t.epochs else "no phase 2 (train.lr_decay_epoch is past the last epoch)")
    note = f"Training: AAVS's adapters of a frozen Mask2Former (train.tune: adapters); {phase2}."
    if cfg.model.mask2former == "random":
        note += " The Mask2Former is RANDOM, so its frozen layers stay random."
    return note


def run_notes(cfg) -> list[str]:
    """What the run summary says about where this run's models come from."""
    if cfg.dataset.layout == "videos" and cfg.predict.models_from is None:
        return ["A folder of videos has no ground truth to train on: preprocessing only. Set "
                "predict.models_from to a finished training run to segment these videos."]
    return [models_note(cfg)] if cfg.predict.models_from else [training_note(cfg)]


def write_summary(stage_shards: dict[str, list[str | Path]], n_videos: int, csv_path: str | Path,
                  md_path: str | Path, title: str = "Run summary", notes=(), refused=()) -> list[dict]:
    """Write skipped.csv (video_id, stage, shard, reason) and a markdown summary (with ``notes``
    about the run beside those the shards carry; ``refused``: the manifest's refused videos, as
    ``read_refused`` gives them, listed first)."""
    counts, failures, shard_notes = collect(stage_shards)
    failures = list(refused) + failures
    if refused:
        counts = {"manifest": {"shards": 0, "written": n_videos, "failed": len(refused), "decoders": {}}, **counts}
    notes = sorted(set(shard_notes) | set(notes))
    csv_path, md_path = Path(csv_path), Path(md_path)
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video_id", "stage", "shard", "reason"])
        w.writeheader()
        w.writerows(failures)
    lines = [f"# {title}", "", f"Videos in the manifest: {n_videos}", "",
             "| stage | shards | videos written | videos skipped | read by |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {c['shards']} | {c['written']} | {c['failed']} | "
              f"{', '.join(f'{d}: {k}' for d, k in sorted(c['decoders'].items()))} |" for s, c in counts.items()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- **{n}**" for n in notes]
    lines += ["", f"## Skipped videos ({len(failures)})", ""]
    if failures:
        lines += ["| video | stage | shard | reason |", "| --- | --- | --- | --- |"]
        lines += [f"| {f['video_id']} | {f['stage']} | {f['shard']} | {f['reason'].replace('|', '/')} |"
                  for f in failures]
    else:
        lines.append("None.")
    write_text(md_path, "\n".join(lines) + "\n")
    return failures
