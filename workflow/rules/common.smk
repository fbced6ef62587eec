# Validation, paths, the shard map and input functions shared by every rule file.
import functools
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from snakemake.logging import logger
from ssp.config import (
    ConfigError,
    check,
    declared_settings,
    listing,
    merge,
    read,
)
from ssp.datasets.manifest import TASK_SUBSETS
from ssp.io.hub import Pending, go_offline, with_config_files
from ssp.layout import (
    MODEL_FILE,
    RunLayout,
    captions_dir as captions_stage,
)
from ssp.prompts.captioners import minicpmo_environment_warning
from ssp.reporting.summary import models_note, run_notes
from ssp.reporting.tables import run_metric_files
from ssp.stages import PREPROCESS, STAGES, reads
from ssp.variants import (
    VARIANTS,
    parse_variant,
    study_variants,
    trained_as,
)


def command_line():
    """The snakemake command line, as Snakemake's own parser reads it (the DAG's settings are not
    yet set while the workflow is read); None where Snakemake was not started from a command line
    (the Python API) or it cannot tell."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if "snakemake" not in started.parts and started.name != "snakemake":
        return None
    try:
        from snakemake.cli import get_argument_parser

        return get_argument_parser().parse_known_args(sys.argv[1:])[0]
    except BaseException:  # arguments it rejects
        return None


# the commands that run no job of the DAG (they need no model fetched)
NO_JOBS = (
    "unlock",
    "lint",
    "list_rules",
    "list_target_rules",
    "list_changes",
    "list_params_changes",
    "list_input_changes",
    "list_untracked",
    "list_conda_envs",
    "cleanup_metadata",
    "cleanup_shadow",
    "delete_all_output",
    "delete_temp_output",
    "summary",
    "detailed_summary",
    "dag",
    "rulegraph",
    "filegraph",
    "d3dag",
    "report",
    "touch",
    "containerize",
    "archive",
    "export_cwl",
    "print_compilation",
    "conda_create_envs_only",
    "conda_cleanup_envs",
)


# every problem at once, one line each; models not fetched (and MiniCPM-o's trust, given after
# reading its fetched code) stop the DAG in `fetched` (below), so that `snakemake models` can run,
# and `snakemake models` alone runs before the rest is in place (the dataset not yet copied)
ARGS = command_line()
TARGETS = set(ARGS.targets or ()) if ARGS is not None else None
FETCH_ONLY = TARGETS == {"models"}
# a command line that runs jobs: unfetched models are listed before the DAG, with any other problem
RUNS_JOBS = (
    ARGS is not None
    and "models" not in TARGETS
    and not any(getattr(ARGS, name, None) for name in NO_JOBS)
)
# the config as check-config reads it: the files named by --configfile (the demo's config.yaml
# when none is), each with the files it extends, then --config's values
CONFIG_FILES = list(workflow.config_settings.configfiles) or ["config.yaml"]
try:
    _given = merge(read(CONFIG_FILES), dict(workflow.config_settings.config))
    config.clear()
    config.update(_given)
    CFG, ALL_PROBLEMS = check(config)
    PROBLEMS = [p for p in ALL_PROBLEMS if not isinstance(p, Pending)]
    AFTER_FETCHING = [p for p in ALL_PROBLEMS if isinstance(p, Pending)]
except ConfigError as exc:
    raise WorkflowError(f"config: {exc}")
if PROBLEMS and FETCH_ONLY and CFG is not None:
    logger.warning(
        "config, to fix before the run (fetching goes on): " + listing(PROBLEMS)
    )
elif PROBLEMS or (AFTER_FETCHING and RUNS_JOBS):
    # one list: the models to fetch with the rest (a command that runs no job, `snakemake models`
    # and a run through the API learn of unfetched models where the DAG is built, in `fetched`)
    raise WorkflowError(
        "config: " + with_config_files(listing(ALL_PROBLEMS), CONFIG_FILES)
    )
go_offline()  # every job reads its models from the cache (rule models fetches)
PROVENANCE = CFG.model_provenance()  # each model key's source, with its resolved commit
config.update(
    CFG.raw
)  # defaults filled in, as snakemake.utils.validate(set_default=True) does


def fetched(wildcards):
    """An input of each model-reading job. When the DAG is built, each model the config names
    by hub id or URL must be fetched (rule models), or the DAG stops naming them all and the command.
    """
    if AFTER_FETCHING:
        raise WorkflowError(
            "config: " + with_config_files(listing(AFTER_FETCHING), CONFIG_FILES)
        )
    return []


L = RunLayout.of(CFG)  # every path of the run (src/ssp/layout.py)
GPU = (
    1 if CFG.resources.use_gpu else 0
)  # GPU rules declare gpu=GPU (see resources.use_gpu)
DATA = L.data


wildcard_constraints:
    shard=r"\d{5}",
    variant=r"[a-z_0-9]+(-pm[0-9.]+|-q1[a-d]|-pt[a-z0-9]+)?",
    q1="[a-d]",
    split="train|val|test",
    stage="|".join(PREPROCESS),


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


@functools.lru_cache(maxsize=1)
def _listing():
    """The videos folder's listing (layout videos without videos_csv) as a digest, and what changed
    since the manifest was built (said once)."""
    import hashlib

    from ssp.datasets.manifest import video_files

    names = [p.name for p in video_files(CFG.dataset_root)]
    if L.manifest.is_file():
        known = set(
            Path(v).name
            for v in pd.read_csv(
                L.manifest, usecols=["video_path"], dtype=str, keep_default_na=False
            )["video_path"]
        )
        if L.manifest_refused.is_file():  # refused clips are not new either
            ids = set(
                pd.read_csv(L.manifest_refused, dtype=str, keep_default_na=False)[
                    "video_id"
                ]
            )
            known |= {n for n in names if Path(n).stem in ids}
        added, removed = len(set(names) - known), len(known - set(names))
        if added or removed:
            logger.info(
                f"dataset.root: {added} video(s) added and {removed} removed since {L.manifest} was "
                "built: the manifest is rebuilt"
            )
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def video_listing(wildcards):
    """What the manifest depends on beyond its input files: a videos folder's listing (a clip added
    later rebuilds the manifest; with videos_csv, the CSV is the input that says which).
    """
    ds = CFG.dataset
    return _listing() if ds.layout == "videos" and not ds.videos_csv else ""


@functools.lru_cache(maxsize=8)
def _manifest_column(manifest, mtime, column):
    return sorted(set(pd.read_csv(manifest, usecols=[column], dtype=str)[column]))


def manifest_values(column):
    """A manifest column's distinct values (a checkpoint: known once it is built); read once per version."""
    manifest = checkpoints.manifest.get().output.manifest
    return _manifest_column(manifest, os.path.getmtime(manifest), column)


def shards():
    return manifest_values("shard")


def shard_files(stage):
    def files(wildcards):
        return L.shards(stage, shards())

    return files


def stage_shards(wildcards):
    """Every registered stage's shards (ssp.stages.STAGES), by stage name: the run summary's inputs."""
    return {name: shard_files(name)(wildcards) for name in STAGES}


def model_file(wildcards):
    """The model.safetensors that predicts: this run's, or predict.models_from's (a pre-mask test study
    variant, full-ptempty, predicts with its preset's model)."""
    return L.model(trained_as(wildcards.variant))


def final_targets(wildcards):
    """The default targets: the run summary and the flow figure; with ground truth, Table 2, the
    qualitative figure and the results page; for a folder of videos (none to train or score on),
    each variant's masks on every split and the results page, when predict.models_from names the
    models."""
    out = [L.summary_md, L.figure("flow")]
    if CFG.dataset.layout != "videos":
        return out + [L.report("table2.md"), L.figure("qualitative"), L.page]
    if CFG.predict.models_from is None:
        return out
    masks = [
        L.prediction_pngs(v, s)
        for v in CFG.train.variants
        for s in manifest_values("split")
    ]
    return out + masks + [L.figure("qualitative"), L.page]


def page_premask_variants():
    """The variants fed a pre-mask: their views on the results page show it."""
    return [v for v in CFG.train.variants if VARIANTS[parse_variant(v)[0]].premask]


def page_inputs(wildcards):
    """The results page's inputs: every shard of the frames, audio, M_O and captions (and of the
    ground truth, where there is one), each variant's predictions on figure_split(), and the stage-1
    predictions the pre-mask stands in with."""
    split = figure_split()
    premask = page_premask_variants()
    out = {
        stage: L.shards(stage, shards()) for stage in ("frames", "audio", "flow_mask")
    }
    if CFG.dataset.layout != "videos":
        out["masks"] = L.shards("masks", shards())
    out["captions"] = L.shards(captions_dir(FIGURE_VARIANT), shards())
    out["predictions"] = [L.predictions(v, split) for v in CFG.train.variants]
    # the stand-in of train.premask_test (a -pt<choice> variant's own is not the page's M_Pre)
    out["stage1"] = next(
        (
            s
            for v in premask
            if "premask_test" not in parse_variant(v)[1]
            and (s := stage1_of(type("W", (), {"variant": v, "split": split})))
        ),
        [],
    )
    out["manifest"] = L.manifest
    return out


def figure_split():
    """The split of the qualitative figure: test, or the first the manifest holds (a folder of videos)."""
    held = manifest_values("split")
    return "test" if "test" in held else held[0]


SUMMARY_NOTES = run_notes(CFG)
MODELS_NOTE = models_note(CFG)


def captions_dir(variant):
    """Captions of the configured Q1, or of the Q1 a prompt-study variant names (full-q1b)."""
    return captions_stage(parse_variant(variant)[1].get("q1_variant"))


TRAINING_STAGES = (
    "frames",
    "masks",
    "flow_mask",
    "vggish",
)  # the shards a train or predict job reads


def training_inputs(wildcards):
    return {
        "manifest": L.manifest,
        **{stage: shard_files(stage)(wildcards) for stage in TRAINING_STAGES},
        "captions": shard_files(captions_dir(wildcards.variant))(wildcards),
    }


def stage1_of(wildcards, split=None):
    """The stage-1 predictions a variant needs on a split ([] if none): for AVSS's stepping
    stones, and for a pre-mask whose test-time stand-in for M_GT is the stage-1 prediction.
    """
    split = split or wildcards.split
    preset, extra = parse_variant(wildcards.variant)
    if preset == "stage1":
        return []
    if CFG.train.task == "semantic":
        return [L.predictions("stage1", split)]
    choice = extra.get("premask_test", CFG.train.premask_test)
    if VARIANTS[preset].premask and choice == "stage1":
        return [L.predictions("baseline", split)]
    return []


def stage1_val(wildcards):
    """What validation reads of the stage-1 model, as test does on the test split: its val
    predictions, for AVSS's stepping stones and for a pre-mask whose stand-in for M_GT they are.
    """
    preset = parse_variant(wildcards.variant)[0]
    if preset == "stage1":
        return []
    if CFG.train.task != "semantic" and (
        not VARIANTS[preset].premask or CFG.train.premask_test != "stage1"
    ):
        return []
    return stage1_of(wildcards, "val")


def job_settings(job):
    """What ``job`` reads of the config, as its declaration in ``ssp.stages`` names it, less the
    speed-only keys and with each model given as where it came from (a hub id's resolved commit,
    a fetched file's sha256): its rule's params, so that a change of any of them re-runs the job
    and nothing else does (fetching another commit of a branch re-runs what reads the model).
    """
    return declared_settings(config, reads(job, config), PROVENANCE)


def eval_tasks():
    """Binary runs: s4 for v1s/s4 videos, ms3 for v1m/ms3 videos; semantic runs: avss."""
    if CFG.train.task == "semantic":
        return ["avss"]
    subsets = set(CFG.train.subsets)
    return [t for t, s in TASK_SUBSETS.items() if subsets & set(s)]


STUDIES = study_variants(
    CFG
)  # table2, ablations, postmask_sweep, prompt_study -> their variants
FIGURE_VARIANT = CFG.train.variants[-1]
# what a study table must say about itself
STUDY_NOTES = {}
if CFG.captions.backend in ("synthetic", "file"):
    STUDY_NOTES["prompt_study"] = (
        f"captions.backend is {CFG.captions.backend!r}: no model reads Q1, so the captions, and these "
        "rows, do not depend on the Q1 wording. The study needs a captioning model (minicpm-o or hf-vlm)."
    )


def study_note(wildcards):
    """What a study's table must say under it: the notes above, and where the models come from."""
    return " ".join(n for n in (STUDY_NOTES.get(wildcards.study), MODELS_NOTE) if n)


# published figures printed beside ours in the tables (studies.reference), an input when set
REFERENCE = [CFG.studies.reference] if CFG.studies.reference else []


def table1_metrics(wildcards):
    """This run's test metrics (scored here) and those of studies.table1_runs (scored by their runs)."""
    own = [L.metrics(v, t, "test") for v in CFG.train.variants for t in eval_tasks()]
    try:
        return own + [
            f
            for run in CFG.studies.table1_runs
            for f in run_metric_files(run, CFG.train.variants)
        ]
    except FileNotFoundError as exc:
        raise WorkflowError(f"studies.table1_runs: {exc}")


def figure_inputs(wildcards):
    """The last listed variant's predictions on figure_split(), its stage-1 stand-in, every variant's log."""
    first = shards()[0]
    wc = type("W", (), {"variant": FIGURE_VARIANT, "split": figure_split()})
    return {
        **{
            stage: L.shard(stage, first)
            for stage in ("frames", "flow", "flow_mask", "masks")
        },
        "predictions": L.predictions(FIGURE_VARIANT, wc.split),
        "stage1": stage1_of(wc),
        "metrics": [L.training_log(v) for v in CFG.train.variants],
        "manifest": L.manifest,
    }
