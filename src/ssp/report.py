"""The run's summary: what every stage wrote, and every video skipped with its reason."""
from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from .store import ShardReader


def collect(stage_shards: dict[str, list[str | Path]]) -> tuple[dict[str, dict], list[dict]]:
    """Per-stage counts and the failure rows of every shard file given."""
    counts, failures = {}, []
    for stage, paths in stage_shards.items():
        written = failed = 0
        for p in paths:
            reader = ShardReader(p)
            written += len(reader.videos())
            fails = reader.failures()
            failed += len(fails)
            failures.extend(dict(asdict(f), shard=Path(p).stem) for f in fails)
            reader.close()
        counts[stage] = {"shards": len(paths), "written": written, "failed": failed}
    return counts, failures


def write_summary(stage_shards: dict[str, list[str | Path]], n_videos: int, csv_path: str | Path,
                  md_path: str | Path, title: str = "Run summary") -> list[dict]:
    """Write skipped.csv (video_id, stage, shard, reason) and a markdown summary."""
    counts, failures = collect(stage_shards)
    csv_path, md_path = Path(csv_path), Path(md_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video_id", "stage", "shard", "reason"])
        w.writeheader()
        w.writerows(failures)
    lines = [f"# {title}", "", f"Videos in the manifest: {n_videos}", "",
             "| stage | shards | videos written | videos skipped |", "| --- | --- | --- | --- |"]
    lines += [f"| {s} | {c['shards']} | {c['written']} | {c['failed']} |" for s, c in counts.items()]
    lines += ["", f"## Skipped videos ({len(failures)})", ""]
    if failures:
        lines += ["| video | stage | shard | reason |", "| --- | --- | --- | --- |"]
        lines += [f"| {f['video_id']} | {f['stage']} | {f['shard']} | {f['reason'].replace('|', '/')} |"
                  for f in failures]
    else:
        lines.append("None.")
    md_path.write_text("\n".join(lines) + "\n")
    return failures
