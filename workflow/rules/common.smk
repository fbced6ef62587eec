# Validation, paths, the shard map and input functions shared by every rule file.
import functools
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from snakemake.logging import logger  # noqa: E402
from ssp.captions import minicpmo_environment_warning  # noqa: E402
from ssp.config import TRAIN_SPEED_ONLY, Config, ConfigError, require_for_dag  # noqa: E402
from ssp.model.ssp import parse_variant  # noqa: E402
from ssp.report import models_note, run_notes  # noqa: E402
from ssp.tables import run_metric_files  # noqa: E402


try:
    CFG = Config.from_dict(config)
    require_for_dag(CFG)
except ConfigError as exc:
    raise WorkflowError(f"config.yaml: {exc}")
config.update(CFG.raw)  # defaults filled in, as snakemake.utils.validate(set_default=True) does

RUN = CFG.run_dir
GPU = 1 if CFG.resources.use_gpu else 0  # GPU rules declare gpu=GPU (see resources.use_gpu)
DATA = CFG.dataset_root
PREPROCESS_STAGES = ["frames", "audio", "masks"]


wildcard_constraints:
    shard=r"\d{5}",
    variant=r"[a-z_0-9]+(-pm[0-9.]+|-q1[a-d])?",
    q1="[a-d]",
    split="train|val|test",
    stage="|".join(PREPROCESS_STAGES),


def dataset_inputs(wildcards):
    """Files whose change must rebuild the manifest."""
    ds = CFG.dataset
    if ds.layout == "synthetic":
        return [DATA / "metadata.csv"]
    if ds.layout == "avsbench_semantic":
        return [DATA / "metadata.csv", DATA / "label2idx.json"]
    if ds.layout == "avsbench_object_s4":
        return [DATA / "Single-source" / "s4_meta_data.csv"]
    if ds.layout == "avsbench_object_ms3":
        return [DATA / "Multi-sources" / "ms3_meta_data.csv"]
    return [ds.videos_csv] if ds.videos_csv else []


@functools.lru_cache(maxsize=8)
def _manifest_column(manifest, mtime, column):
    return sorted(set(pd.read_csv(manifest, usecols=[column], dtype=str)[column]))


def manifest_values(column):
    """A manifest column's distinct values (a checkpoint: known once it is built); read once per version."""
    manifest = checkpoints.manifest.get().output.manifest
    return _manifest_column(manifest, os.path.getmtime(manifest), column)


def shards():
    return manifest_values("shard")


def shard_files(stage, ext="h5"):
    def files(wildcards):
        return [RUN / stage / f"{s}.{ext}" for s in shards()]

    return files


MODELS = CFG.models_dir  # the trained models that predict: this run's, or predict.models_from's


def model_file(wildcards):
    return MODELS / "train" / wildcards.variant / "model.pt"


def final_targets(wildcards):
    """The default targets: the run summary and the flow figure; with ground truth, Table 2 and the
    qualitative figure; for a folder of videos (none to train or score on), each variant's masks
    on every split, when predict.models_from names the models."""
    out = [RUN / "report" / "summary.md", RUN / "figures" / "flow.png"]
    if CFG.dataset.layout != "videos":
        return out + [RUN / "report" / "table2.md", RUN / "figures" / "qualitative.png"]
    if CFG.predict.models_from is None:
        return out
    masks = [RUN / "predictions" / v / f"{s}_png" for v in CFG.train.variants for s in manifest_values("split")]
    return out + masks + [RUN / "figures" / "qualitative.png"]


def figure_split():
    """The split of the qualitative figure: test, or the first the manifest holds (a folder of videos)."""
    held = manifest_values("split")
    return "test" if "test" in held else held[0]


SUMMARY_NOTES = run_notes(CFG)
MODELS_NOTE = models_note(CFG)


def captions_dir(variant):
    """Captions of the configured Q1, or of the Q1 a prompt-study variant names (full-q1b)."""
    q1 = parse_variant(variant)[1].get("q1_variant")
    return f"captions_q1{q1}" if q1 else "captions"


def training_inputs(wildcards):
    return {
        "manifest": RUN / "manifest.csv",
        "frames": shard_files("frames")(wildcards),
        "masks": shard_files("masks")(wildcards),
        "flow_mask": shard_files("flow_mask")(wildcards),
        "vggish": shard_files("vggish")(wildcards),
        "captions": shard_files(captions_dir(wildcards.variant), "jsonl")(wildcards),
    }


def stage1_of(wildcards):
    """The stage-1 predictions a variant's predictions need on a split ([] if none)."""
    semantic = CFG.train.task == "semantic"
    if wildcards.variant == "stage1":
        return []
    if semantic:
        return [RUN / "predictions" / "stage1" / f"{wildcards.split}.h5"]
    premask = parse_variant(wildcards.variant)[0] not in ("baseline", "text_att", "text_vta")
    if premask and CFG.train.premask_test == "stage1":
        return [RUN / "predictions" / "baseline" / f"{wildcards.split}.h5"]
    return []


def flow_params():
    """The flow settings that decide the flow (a change re-runs the stage): the backend's own, not
    the other backends', nor the Perceiver's batch size or attention path (speed only)."""
    f = config["flow"]
    if f["backend"] == "dis":
        return {"backend": "dis", "dis_preset": f["dis_preset"]}
    if f["backend"] == "perceiver":
        p = f["perceiver"]
        return {"backend": "perceiver", **{k: p[k] for k in ("weights", "dtype", "device", "min_overlap")}}
    return {"backend": f["backend"]}


def train_params():
    """The train settings in the rule's params: a change re-trains, except the speed-only ones and
    train.variants (adding a variant trains only that one)."""
    return {k: v for k, v in config["train"].items() if k not in TRAIN_SPEED_ONLY}


def eval_tasks():
    """Binary runs: s4 for v1s/s4 videos, ms3 for v1m/ms3 videos; semantic runs: avss."""
    if CFG.train.task == "semantic":
        return ["avss"]
    subsets = set(CFG.train.subsets)
    return [t for t, s in (("s4", {"v1s", "s4"}), ("ms3", {"v1m", "ms3"})) if subsets & s]


STUDIES = {
    # the variants this run trains (train.variants): results/<name>/report/table2.{md,csv}
    "table2": list(CFG.train.variants),
    # every Table 2 row
    "ablations": ["baseline", "premask", "premask_postmask", "text_att", "text_vta", "full_no_postmask", "full"],
    # Fig. 5: the full model with each post-mask weight lambda'_mask
    "postmask_sweep": [f"full-pm{w:g}" for w in CFG.studies.postmask_weights],
    # Fig. 6/7: the full model with captions from each Q1 wording
    "prompt_study": [f"full-q1{q}" for q in CFG.studies.q1_variants],
}
FIGURE_VARIANT = CFG.train.variants[-1]
# what a study table must say about itself
STUDY_NOTES = {}
if CFG.captions.backend in ("synthetic", "file"):
    STUDY_NOTES["prompt_study"] = (
        f"captions.backend is {CFG.captions.backend!r}: no model reads Q1, so the captions, and these "
        "rows, do not depend on the Q1 wording. The study needs a captioning model (minicpm-o or hf-vlm).")


def study_note(wildcards):
    """What a study's table must say under it: the notes above, and where the models come from."""
    return " ".join(n for n in (STUDY_NOTES.get(wildcards.study), MODELS_NOTE) if n)


# published figures printed beside ours in the tables (studies.reference), an input when set
REFERENCE = [CFG.studies.reference] if CFG.studies.reference else []


def table1_metrics(wildcards):
    """This run's test metrics (scored here) and those of studies.table1_runs (scored by their runs)."""
    own = [RUN / "metrics" / v / f"{t}_test.json" for v in CFG.train.variants for t in eval_tasks()]
    try:
        return own + [f for run in CFG.studies.table1_runs for f in run_metric_files(run, CFG.train.variants)]
    except FileNotFoundError as exc:
        raise WorkflowError(f"studies.table1_runs: {exc}")


def figure_inputs(wildcards):
    """The last listed variant's predictions on figure_split(), its stage-1 stand-in, every variant's log."""
    first = shards()[0]
    wc = type("W", (), {"variant": FIGURE_VARIANT, "split": figure_split()})
    return {
        "frames": RUN / "frames" / f"{first}.h5",
        "flow": RUN / "flow" / f"{first}.h5",
        "flow_mask": RUN / "flow_mask" / f"{first}.h5",
        "masks": RUN / "masks" / f"{first}.h5",
        "predictions": RUN / "predictions" / FIGURE_VARIANT / f"{wc.split}.h5",
        "stage1": stage1_of(wc),
        "metrics": [MODELS / "train" / v / "metrics.csv" for v in CFG.train.variants],
        "manifest": RUN / "manifest.csv",
    }
