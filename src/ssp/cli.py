"""Command line: every stage of the pipeline can be run by hand, outside Snakemake.

    python -m ssp check-config --config config.yaml
    python -m ssp fetch-models --config configs/paper.yaml [--dry-run] [--verify] [--update]
    python -m ssp trust-code --config configs/paper.yaml
    python -m ssp config-reference [--out docs/config-reference.md]
    python -m ssp synth      --config config.yaml [--out DIR]
    python -m ssp manifest   --config config.yaml [--out manifest.csv]
    python -m ssp stage frames|audio|masks|flow|flow_mask|vggish|captions --config config.yaml --shard 00000 [--out FILE]
    python -m ssp summary    --config config.yaml
    python -m ssp train      --config config.yaml --variant full
    python -m ssp predict    --config config.yaml --variant full --split test [--stage1 FILE]
    python -m ssp evaluate   --task s4 --root DATA --predictions FILE.h5 --split test --out metrics.json
    python -m ssp table1     --runs results/s4 results/ms3 results/avss --out results/table1.md

--config takes several files, read as the workflow reads Snakemake's --configfile (ssp.config.read:
the files they extend first, then each over the ones before):
    python -m ssp check-config --config configs/s4.yaml site.yaml

Every command but fetch-models runs offline (HF_HUB_OFFLINE=1), as the workflow's jobs do.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from ssp import __version__
from ssp import config as config_mod
from ssp.datasets.manifest import TASKS
from ssp.io import logs
from ssp.io.hub import with_config_files
from ssp.layout import RunLayout
from ssp.stages import STAGES

log = logging.getLogger("ssp")
EXIT_FAILED = 1   # the command failed (2: argparse's, the command line itself is wrong)


def cmd_check_config(args) -> int:
    """Every problem of the config at once, one line each."""
    cfg, problems = config_mod.check(config_mod.read(args.config))
    if problems:
        log.error("%s: %s", " + ".join(args.config), with_config_files(config_mod.listing(problems), args.config))
        return EXIT_FAILED
    print(f"{' + '.join(args.config)}: valid (dataset {cfg.dataset.name!r}, layout {cfg.dataset.layout!r})")
    from ssp.prompts.captioners import minicpmo_environment_warning

    note = minicpmo_environment_warning(cfg, uses_conda=False)
    if note:
        log.warning("%s (With --use-conda the captions rules get envs/minicpmo.yaml, and this does not apply.)", note)
    return 0


def cmd_fetch_models(args) -> int:
    """Download what the config names by hub id or URL, check it, write the lock (see ssp.io.hub)."""
    from ssp.io import hub

    raw = config_mod.with_defaults(config_mod.read(args.config))
    try:
        rows = hub.fetch(raw, dry_run=args.dry_run, verify=args.verify, update=args.update)
    except hub.FetchError as exc:
        log.error("%s", exc)
        return 1
    if not rows:
        print("this config names no model by hub id or URL: nothing to fetch")
        return 0
    print(with_config_files(hub.report(rows, hub.lock_path(raw)), args.config))
    return 0


def cmd_trust_code(args) -> int:
    """Record the sha256 of every *.py of captions.model's folder as the code trust_remote_code allows."""
    from ssp.io import hub, verify

    raw = config_mod.with_defaults(config_mod.read(args.config))
    local, resolved = hub.resolve_config(raw)
    source, folder = hub.get_key(raw, "captions.model"), hub.get_key(local, "captions.model")
    if not folder or not Path(folder).is_dir():
        problem = resolved["captions.model"].problem if "captions.model" in resolved else None
        log.error("%s", with_config_files(problem or f"'captions.model': {folder!r} is not a model folder", args.config))
        return EXIT_FAILED
    identity, trust_file = verify.code_identity(source, folder), verify.trust_path(raw)
    before = verify.untrusted(folder, identity, trust_file)
    hashes = verify.trust(folder, identity, trust_file)
    print(f"trusted for {identity} ({trust_file}):")
    print("\n".join(f"  {Path(folder) / n}  sha256:{h}" for n, h in hashes.items()) or "  (no *.py files)")
    if before and "not trusted yet" not in before:
        print(f"instead of the code trusted before: {before.split('(', 1)[1].split(')')[0]}")
    return 0


def cmd_config_reference(args) -> int:
    text = config_mod.reference_markdown()
    if args.out:
        from ssp.io.files import write_text

        write_text(args.out, text)
    else:
        print(text, end="")
    return 0


def cmd_synth(args) -> int:
    from ssp.datasets.synthavs import generate

    cfg = config_mod.load(args.config)
    s = cfg.synthetic
    out = Path(args.out) if args.out else RunLayout.of(cfg).data
    n = generate(out, seed=s.seed, videos={"v1s": s.videos.v1s, "v1m": s.videos.v1m, "v2": s.videos.v2},
                 train=s.split_fractions.train, val=s.split_fractions.val, image_size=s.image_size,
                 classes=s.classes, max_objects=s.max_objects)
    log.info("SynthAVS: %d videos written to %s", n, out)
    return 0


def cmd_manifest(args) -> int:
    from ssp.datasets.manifest import build_manifest, shards_of, write_manifest, write_refused

    cfg = config_mod.load(args.config)
    refused: list = []
    df = build_manifest(cfg, refused)
    out = Path(args.out) if args.out else RunLayout.of(cfg).manifest
    write_manifest(df, out)
    write_refused(refused, out)
    log.info("manifest: %d videos in %d shards -> %s", len(df), len(shards_of(df)), out)
    return 0


def cmd_stage(args) -> int:
    cfg = config_mod.load(args.config)
    layout = RunLayout.of(cfg)
    stage = STAGES[args.stage]
    out = Path(args.out) if args.out else layout.shard(stage.name, args.shard)
    source = layout.shard(stage.source, args.shard) if stage.source else None
    stage.run(cfg, args.manifest or layout.manifest, args.shard, out, source)
    return 0


def cmd_summary(args) -> int:
    from ssp.datasets.manifest import read_manifest, read_refused, shards_of
    from ssp.reporting.summary import run_notes, write_summary

    cfg = config_mod.load(args.config)
    layout = RunLayout.of(cfg)
    if not layout.manifest.is_file():
        raise FileNotFoundError(f"{layout.run}: no run here yet ({layout.manifest} does not exist); "
                                f"run `snakemake` (or `python -m ssp manifest`) with {' '.join(args.config)} first")
    manifest = read_manifest(layout.manifest)
    stage_shards = {s: layout.shards(s, shards_of(manifest)) for s in STAGES}
    failures = write_summary(stage_shards, len(manifest), layout.skipped_csv, layout.summary_md, notes=run_notes(cfg),
                             refused=read_refused(layout.manifest))
    print(layout.summary_md.read_text())
    return 0 if not args.strict or not failures else 1


def _run_captions(layout: RunLayout, variant: str) -> list[Path]:
    """The captions a variant reads: the configured Q1's, or a prompt-study variant's (full-q1b)."""
    from ssp.layout import captions_dir
    from ssp.variants import parse_variant

    return sorted(layout.stage_dir(captions_dir(parse_variant(variant)[1].get("q1_variant"))).glob("*.jsonl"))


def cmd_train(args) -> int:
    from ssp.engine.jobs import run_training

    cfg = config_mod.load(args.config)
    layout = RunLayout.of(cfg)
    out = Path(args.out) if args.out else layout.train_dir(args.variant)
    captions = args.captions if args.captions is not None else _run_captions(layout, args.variant)
    inputs = json.loads(Path(args.inputs).read_text()) if args.inputs else None
    run_training(cfg, args.variant, out, captions_files=captions, max_steps=args.max_steps, inputs=inputs,
                 stage1_val=args.stage1_val)
    return 0


def cmd_predict(args) -> int:
    from ssp.engine.jobs import run_prediction

    cfg = config_mod.load(args.config)
    layout = RunLayout.of(cfg)
    from ssp.variants import trained_as

    weights = Path(args.weights) if args.weights else layout.model(trained_as(args.variant))
    out = Path(args.out) if args.out else layout.predictions(args.variant, args.split)
    run_prediction(cfg, args.variant, args.split, weights, out, captions_files=_run_captions(layout, args.variant),
                   stage1=args.stage1)
    return 0


def cmd_evaluate(args) -> int:
    from ssp.evaluation.scoring import EvaluationError, evaluate, write

    if not Path(args.root).is_dir():
        log.error("--root %s: no such folder (the dataset's root: AVSBench-semantic or -object)", args.root)
        return EXIT_FAILED
    if not Path(args.predictions).is_file():
        log.error("--predictions %s: no such file", args.predictions)
        return EXIT_FAILED
    try:
        result = evaluate(args.task, args.root, args.predictions, args.split, args.allow_missing, args.fscore)
    except EvaluationError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except config_mod.ConfigError as exc:   # the root read as a dataset
        log.error("--root %s: %s", args.root, str(exc).removeprefix("invalid config: "))
        return EXIT_FAILED
    write(result, args.out)
    keys = [k for k in result if k.startswith(("miou", "fscore"))]
    print(json.dumps({k: round(result[k], 4) for k in keys if isinstance(result[k], float)} | {"videos": result["videos"]},
                     indent=1))
    return 0


def cmd_table1(args) -> int:
    from ssp.reporting.tables import run_metric_files, run_variants, settings_table

    variants = args.variants or run_variants(args.runs)
    files = [f for run in args.runs for f in run_metric_files(run, variants, args.split)]
    out = Path(args.out)
    settings_table(files, variants, out, out.with_suffix(".csv"), split=args.split, reference=args.reference)
    print(out.read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ssp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Exit status: 0 done, 1 the command failed (a config problem, a missing "
                                 "file: the message says which), 2 the command line itself is wrong.")
    ap.add_argument("--version", action="version", version=f"ssp {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", nargs="+", default=["config.yaml"],
                       help="config file(s), later ones merged over earlier ones (default: config.yaml)")
        p.set_defaults(fn=fn)
        return p

    add("check-config", cmd_check_config, "validate a config: every problem at once, one line each")
    p = add("fetch-models", cmd_fetch_models, "download the models the config names by hub id or URL into the "
            "cache, check their hashes and write the lock file (the one command that needs the network)")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes; download nothing")
    p.add_argument("--verify", action="store_true", help="hash the cached files again against the Hub's and the lock's")
    p.add_argument("--update", action="store_true", help="resolve branches anew (the lock's commits otherwise)")
    add("trust-code", cmd_trust_code, "after reading captions.model's *.py files: record their sha256 as the code "
        "that captions.trust_remote_code allows to run (beside the lock: models.trust.json)")
    p = sub.add_parser("config-reference", help="the configuration reference, from the schema (docs/config-reference.md)")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(fn=cmd_config_reference)
    add("synth", cmd_synth, "generate SynthAVS").add_argument("--out", help="output folder (default: the run's data/)")
    add("manifest", cmd_manifest, "read the dataset into a manifest").add_argument(
        "--out", help="manifest CSV to write (default: the run's manifest.csv)")
    p = add("stage", cmd_stage, "run one preprocessing stage on one shard")
    p.add_argument("stage", choices=tuple(STAGES))
    p.add_argument("--shard", required=True, help="the shard's id, as the manifest's shard column (00000)")
    p.add_argument("--manifest", help="the manifest CSV (default: the run's)")
    p.add_argument("--out", help="the shard file to write (default: the run's)")
    add("summary", cmd_summary, "list what every stage wrote and skipped").add_argument(
        "--strict", action="store_true", help="exit 1 when any video was skipped")
    p = add("train", cmd_train, "train one variant (resumes from its checkpoint)")
    p.add_argument("--variant", required=True, help="a Table 2 row (baseline, full, ...), stage1, or a study's "
                   "(full-pm5, full-q1b, ...): docs/method.md")
    p.add_argument("--out", help="folder of the trained model (default: the run's train/<variant>/)")
    p.add_argument("--captions", nargs="*", help="caption JSONL files (default: the run's)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (checkpointed)")
    p.add_argument("--inputs", help="JSON of the shard files to read (manifest, frames, masks, ...; default: the run's)")
    p.add_argument("--stage1-val", help="stage-1 predictions of the val split (.h5): the pre-mask's stand-in for "
                   "M_GT in validation when train.premask_test is stage1")
    p = add("predict", cmd_predict, "write a variant's predictions on a split")
    p.add_argument("--variant", required=True, help="the trained variant (as train --variant)")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--weights", help="a trained model.safetensors, or an older model.pt (default: "
                   "train/<variant>/model.safetensors of this run, or of predict.models_from)")
    p.add_argument("--stage1", help="stage-1 predictions (.h5) standing in for the ground truth")
    p.add_argument("--out", help="predictions HDF5 to write (default: the run's predictions/<variant>/<split>.h5)")
    p = sub.add_parser("evaluate", help="score a predictions file with the AVSBench metrics")
    p.add_argument("--task", choices=TASKS, required=True, help="s4 and ms3 score binary masks, avss 71 classes")
    p.add_argument("--root", required=True, help="dataset root (AVSBench-semantic or -object layout)")
    p.add_argument("--predictions", required=True, help="predictions HDF5 (format: docs/outputs.md)")
    p.add_argument("--split", default="test", help="the split the predictions are of (default: test)")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--allow-missing", action="store_true", help="score only the videos that have predictions")
    p.add_argument("--fscore", choices=["aavs", "avsbench"], default="aavs",
                   help="binary F-score map: AAVS's sigmoid(2 s_sounding - s_background) of the class scores "
                        "(default), or AVSBench's one probability map (the sounding share)")
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser("table1", help="Table 1: several runs' metrics, a column pair per setting (S4, MS3, AVSS)")
    p.add_argument("--runs", nargs="+", required=True, help="results folders of finished runs (results/s4 ...)")
    p.add_argument("--variants", nargs="+", help="rows, in order (default: every variant the runs scored)")
    p.add_argument("--split", default="test", help="the split scored (default: test)")
    p.add_argument("--reference", help="CSV of published figures (as studies.reference)")
    p.add_argument("--out", required=True, help="table1.md to write (and table1.csv beside it)")
    p.set_defaults(fn=cmd_table1)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    if args.cmd == "fetch-models":   # the one command that goes online
        runs = contextlib.nullcontext()
    else:
        from ssp.io.hub import offline

        runs = offline()
    try:
        with runs:
            return args.fn(args)
    except config_mod.ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
