"""The run layout: where every artifact of a run lives, in one place.

The rules, the CLI, the tests, the tables and the training jobs all ask this module, so that no
path is written twice. Every method takes plain values or Snakemake wildcard patterns alike
(``layout.shard("frames", "{shard}")`` is the rule's output pattern, ``layout.shard("frames",
"00000")`` one file).

    <results>/<dataset.name>/
      data/                               SynthAVS (layout `synthetic` only)
      manifest.csv
      <stage>/<shard>.h5                  frames, audio, masks, flow, flow_mask, vggish
      captions[_q1<x>]/<shard>.jsonl      the prompts (a prompt-study Q1 wording: captions_q1b)
      train/<variant>/                    model.safetensors + model.json, best.safetensors, best.json,
                                          checkpoint.pt, metrics.csv
      predictions/<variant>/<split>.h5    and <split>_png/<video>/<t>.png
      metrics/<variant>/<task>_<split>.json
      report/                             summary.md, skipped.csv, table2.md, <study>.md/.csv
      figures/                            flow.png, qualitative.png, training_curves.png, <study>.png
      logs/, benchmarks/                  one log and one benchmark file per job
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# a trained model: its weights (safetensors) and, beside them, its metadata (model.json)
MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"   # an older run's (read with weights_only=True)


@dataclass(frozen=True)
class RunLayout:
    run: Path      # <results>/<dataset.name>
    data: Path     # the dataset's root (SynthAVS: <run>/data)
    models: Path   # the run whose trained models predict: this one, or predict.models_from

    @classmethod
    def of(cls, cfg) -> "RunLayout":
        """The layout of a ``Config``'s run."""
        return cls(run=cfg.run_dir, data=cfg.dataset_root, models=cfg.models_dir)

    @classmethod
    def at(cls, run: str | Path) -> "RunLayout":
        """The layout of a finished run's folder (another setting's run, for Table 1)."""
        run = Path(run)
        return cls(run=run, data=run / "data", models=run)

    # ------------------------------------------------------------------ preprocessing
    @property
    def manifest(self) -> Path:
        return self.run / "manifest.csv"

    @property
    def manifest_refused(self) -> Path:
        """The videos the manifest left out, with why (``ssp.datasets.manifest.refused_path``)."""
        return self.run / "manifest.refused.csv"

    def stage_dir(self, stage: str) -> Path:
        return self.run / stage

    def shard(self, stage: str, shard: str) -> Path:
        """One shard of a stage: HDF5, or JSONL for the captions (``captions``, ``captions_q1b``)."""
        ext = "jsonl" if stage.startswith("captions") else "h5"
        return self.stage_dir(stage) / f"{shard}.{ext}"

    def shards(self, stage: str, shards) -> list[Path]:
        return [self.shard(stage, s) for s in shards]

    # ------------------------------------------------------------------ training and predictions
    def train_dir(self, variant: str) -> Path:
        return self.run / "train" / variant

    def model(self, variant: str) -> Path:
        """The trained model that predicts: this run's, or predict.models_from's (whose older
        ``model.pt`` is taken where it has no ``model.safetensors``)."""
        folder = self.models / "train" / variant
        if self.models != self.run and not (folder / MODEL_FILE).exists() and (folder / LEGACY_MODEL_FILE).exists():
            return folder / LEGACY_MODEL_FILE
        return folder / MODEL_FILE

    def training_log(self, variant: str) -> Path:
        """A variant's metrics.csv in the run whose models predict."""
        return self.models / "train" / variant / "metrics.csv"

    def predictions(self, variant: str, split: str) -> Path:
        return self.run / "predictions" / variant / f"{split}.h5"

    def prediction_pngs(self, variant: str, split: str) -> Path:
        return self.run / "predictions" / variant / f"{split}_png"

    # ------------------------------------------------------------------ scores and reports
    def metrics_dir(self, variant: str) -> Path:
        return self.run / "metrics" / variant

    def metrics(self, variant: str, task: str, split: str) -> Path:
        return self.metrics_dir(variant) / f"{task}_{split}.json"

    def report(self, name: str) -> Path:
        """A file of the report folder: ``summary.md``, ``table2.md``, ``ablations.csv`` ..."""
        return self.run / "report" / name

    def figure(self, name: str) -> Path:
        return self.run / "figures" / f"{name}.png"

    @property
    def page(self) -> Path:
        """The results page's folder (``index.html`` and its files; ssp.reporting.page)."""
        return self.run / "page"

    @property
    def summary_md(self) -> Path:
        return self.report("summary.md")

    @property
    def skipped_csv(self) -> Path:
        return self.report("skipped.csv")

    # ------------------------------------------------------------------ logs
    def log(self, *parts: str) -> Path:
        """``logs/<parts...>.log``: ``log("flow", "{shard}")``, ``log("summary")``."""
        *dirs, name = parts
        return self.run.joinpath("logs", *dirs, f"{name}.log")

    def benchmark(self, *parts: str) -> Path:
        *dirs, name = parts
        return self.run.joinpath("benchmarks", *dirs, f"{name}.tsv")


def captions_dir(q1: str | None = None) -> str:
    """The captions stage folder: the configured Q1's, or a prompt-study wording's (``captions_q1b``)."""
    return f"captions_q1{q1}" if q1 else "captions"


def stage_dirs(files_by_stage: dict[str, list]) -> dict[str, Path]:
    """The folder of each stage's shards, from the shard files a rule declares (``snakemake.input``).

    A job reads exactly what its rule declares: each stage's files must lie in one folder, which the
    job's readers then open shard by shard through the manifest.
    """
    out = {}
    for stage, files in files_by_stage.items():
        folders = {Path(f).parent for f in files}
        if len(folders) != 1:
            raise ValueError(f"the {stage} shards declared lie in {len(folders)} folders "
                             f"({', '.join(sorted(map(str, folders)))}); a stage's shards share one folder")
        out[stage] = folders.pop()
    return out
