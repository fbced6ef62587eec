"""The scoring command on the AVSBench-semantic and AVSBench-object layouts."""
import json

import h5py
import numpy as np
import pytest

from ssp.cli import main
from ssp.io.media import read_mask


def _truth_semantic(root, subset, uid, T):
    return np.stack([read_mask(str(root / subset / uid / "labels_rgb" / f"{i}.png"), "rgb", 224, 71)
                     for i in range(T)])


def test_semantic_layout_binary_and_avss(tmp_path, semantic_root):
    truth = _truth_semantic(semantic_root, "v2", "vidC_2", 10)       # the v2 test video, class "car"
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        h5.create_group("vidC_2").create_dataset("labels", data=truth.astype(np.uint8))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--task", "avss", "--root", str(semantic_root), "--predictions", str(pred),
                 "--split", "test", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    # background and car perfect; the other 69 classes never occur and score 0
    assert r["miou"] == pytest.approx(2 / 71, abs=1e-6) and r["videos"] == 1 and r["frames"] == 10
    assert r["miou_no_bg_aavs"] == pytest.approx(1 / 70, abs=1e-6)
    assert r["miou_padded10"] == pytest.approx(r["miou"])          # a 10-frame video is not padded
    assert "protocols" in r and len(r["per_class_miou"]) == 71

    with h5py.File(pred, "w") as h5:  # binary task on the v1m val video: all-background prediction
        h5.create_group("vidB_1").create_dataset("scores", data=np.zeros((5, 224, 224), np.float32))
    assert main(["evaluate", "--fscore", "avsbench", "--task", "ms3", "--root", str(semantic_root), "--predictions", str(pred),
                 "--split", "val", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["miou"] == 0.0 and r["task"] == "ms3" and r["videos"] == 1 and r["size"] == 224


def test_scoring_at_another_size_than_avsbench_says_so(tmp_path, semantic_root, capsys):
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        h5.create_group("vidB_1").create_dataset("scores", data=np.zeros((5, 64, 64), np.float32))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--fscore", "avsbench", "--task", "ms3", "--root", str(semantic_root), "--predictions", str(pred),
                 "--split", "val", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["size"] == 64
    assert "predictions of 64 x 64; AVSBench scores at 224 x 224" in capsys.readouterr().err


def test_object_s4_layout_and_missing_videos(tmp_path, object_s4_root):
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        gt = np.zeros((5, 224, 224), np.float32)
        # the fixture's mask: rows 10:30, cols 12:40 of 48 -> resized to 224
        gt[:] = read_mask(str(object_s4_root / "Single-source/s4_data/gt_masks/test/gun_shooting/gunC/gunC_1.png"),
                          "binary", 224, 2)
        h5.create_group("gunC").create_dataset("scores", data=gt)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--fscore", "avsbench", "--task", "s4", "--root", str(object_s4_root), "--predictions", str(pred),
                 "--split", "test", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["miou"] == pytest.approx(1.0, abs=1e-6) and r["fscore"] == pytest.approx(1.0, abs=1e-6)
    # train split: two videos, none predicted -> an error naming a video, unless asked to skip
    assert main(["evaluate", "--fscore", "avsbench", "--task", "s4", "--root", str(object_s4_root), "--predictions", str(pred),
                 "--split", "train", "--out", str(out)]) == 1
    with h5py.File(pred, "a") as h5:
        h5.create_group("dogA").create_dataset("scores", data=np.zeros((5, 224, 224), np.float32))
    assert main(["evaluate", "--fscore", "avsbench", "--task", "s4", "--root", str(object_s4_root), "--predictions", str(pred),
                 "--split", "train", "--out", str(out), "--allow-missing"]) == 0
    r = json.loads(out.read_text())
    assert r["videos"] == 1 and r["missing_videos"] == 1 and r["missing"] == ["carB"]


def test_missing_video_message(tmp_path, object_s4_root, capsys):
    pred = tmp_path / "empty.h5"
    h5py.File(pred, "w").close()
    assert main(["evaluate", "--fscore", "avsbench", "--task", "s4", "--root", str(object_s4_root), "--predictions", str(pred),
                 "--split", "test", "--out", str(tmp_path / "m.json")]) == 1
    assert "no prediction for video 'gunC'" in capsys.readouterr().err


def _metrics(path, task, split, miou, fscore):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "split": split, "miou": miou, "fscore": fscore}))


def test_table_puts_published_figures_beside_ours(tmp_path):
    from ssp.reporting.tables import ablation_table

    files = []
    for v, m in (("baseline", 0.5), ("full", 0.625)):
        for s in ("val", "test"):
            files.append(tmp_path / "metrics" / v / f"s4_{s}.json")
            _metrics(files[-1], "s4", s, m, m + 0.1)
    ref = tmp_path / "paper.csv"
    ref.write_text("variant,task,split,miou,fscore,source\nfull,s4,test,81.5,89.25,Table 2\n"
                   "text_vta,s4,test,80.0,88.0,Table 2\n")
    rows = ablation_table(files, ["baseline", "full"], tmp_path / "t.md", tmp_path / "t.csv", reference=ref)
    full = next(r for r in rows if r["variant"] == "full")
    assert full["s4 test mIoU"] == "62.50" and full["s4 test mIoU (ref.)"] == "81.50"
    assert full["s4 test F (ref.)"] == "89.25" and "s4 val mIoU (ref.)" not in full
    assert next(r for r in rows if r["variant"] == "baseline")["s4 test mIoU (ref.)"] == ""
    md = (tmp_path / "t.md").read_text()
    assert "| s4 test mIoU (ref.) |" in md and "published figures from" in md and "Table 2" in md
    # without a reference: no (ref.) column at all; a study's note under the table
    rows = ablation_table(files, ["baseline", "full"], tmp_path / "u.md", tmp_path / "u.csv", note="equal rows")
    assert not any("(ref.)" in k for k in rows[0]) and "Note: equal rows" in (tmp_path / "u.md").read_text()


def test_table_says_which_epoch_each_model_is(tmp_path):
    from ssp.reporting.tables import ablation_table

    files = []
    for v, epoch in (("baseline", 6), ("full", 4)):
        for s in ("val", "test"):
            files.append(tmp_path / "metrics" / v / f"s4_{s}.json")
            _metrics(files[-1], "s4", s, 0.5, 0.6)
            files[-1].write_text(json.dumps({**json.loads(files[-1].read_text()), "model_epoch": epoch}))
    rows = ablation_table(files, ["baseline", "full"], tmp_path / "t.md", tmp_path / "t.csv")
    assert [r["epoch"] for r in rows] == ["6", "4"]
    assert "epoch: the training epoch" in (tmp_path / "t.md").read_text()
    rows = ablation_table(files[:2], ["baseline", "full"], tmp_path / "u.md", tmp_path / "u.csv")
    assert [r["epoch"] for r in rows] == ["6", ""]   # full not scored
    old = [tmp_path / "old.json"]   # metrics from before the epoch was recorded: no column
    _metrics(old[0], "s4", "test", 0.5, 0.6)
    assert "epoch" not in ablation_table(old, ["baseline"], tmp_path / "v.md", tmp_path / "v.csv")[0]


def test_reference_file_errors_name_the_line(tmp_path):
    from ssp.reporting.tables import read_reference

    bad = tmp_path / "paper.csv"
    bad.write_text("variant,task,split,miou,fscore\nfull,s4,test,81.5,89.2\nfulll,s4,test,1,2\n")
    with pytest.raises(ValueError, match=r"paper.csv, line 3: unknown variant 'fulll'"):
        read_reference(bad)
    bad.write_text("variant,task,miou,fscore\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['split'\]"):
        read_reference(bad)
    bad.write_text("variant,task,split,miou,fscore,method\nfull,s4,test,81.5,89.2,SSP\n")
    with pytest.raises(ValueError, match=r"line 2: give either a variant of ours or another method's name"):
        read_reference(bad)


def test_table1_puts_each_setting_from_its_run_and_published_rows_after_ours(tmp_path):
    """Table 1: S4, MS3 and AVSS columns, each from the run that scored it (the paper trains a model
    per setting); our variants measured, then the published rows, ours and other methods'."""
    from ssp.reporting.tables import settings_table

    files = []
    for run, task, miou in (("s4", "s4", 0.8), ("ms3", "ms3", 0.6), ("avss", "avss", 0.4)):
        for v, gain in (("baseline", 0.0), ("full", 0.05), ("premask", 0.02)):
            for split in ("val", "test"):
                files.append(tmp_path / run / "metrics" / v / f"{task}_{split}.json")
                _metrics(files[-1], task, split, miou + gain + 0.01 * (split == "val"), miou + gain + 0.1)
    ref = tmp_path / "paper.csv"
    ref.write_text("variant,task,split,miou,fscore,source,method\n"
                   "full,s4,test,83.2,90.1,SSP Table 1,\n"
                   ",s4,test,80.0,89.5,AVSegFormer paper,AVSegFormer\n"
                   ",avss,test,37.0,42.0,AVSegFormer paper,AVSegFormer\n"
                   ",ms3,val,1,2,,AVSegFormer\n")
    rows = settings_table(files, ["baseline", "full"], tmp_path / "t1.md", tmp_path / "t1.csv", reference=ref)
    assert [(r["method"], r["figures"]) for r in rows] == [
        ("baseline", "measured"), ("full", "measured"), ("full", "published (SSP Table 1)"),
        ("AVSegFormer", "published (AVSegFormer paper)")]
    assert list(rows[0])[2:] == ["S4 mIoU", "S4 F", "MS3 mIoU", "MS3 F", "AVSS mIoU", "AVSS F"]
    assert rows[1]["S4 mIoU"] == "85.00" and rows[1]["MS3 F"] == "75.00" and rows[1]["AVSS mIoU"] == "45.00"
    assert rows[2]["S4 mIoU"] == "83.20" and rows[2]["MS3 mIoU"] == "" and rows[3]["AVSS F"] == "42.00"
    md = (tmp_path / "t1.md").read_text()
    assert "test split" in md and f"MS3: measured in {tmp_path / 'ms3'}" in md and "not measured by this project" in md
    # one setting from two runs would mix models: an error naming both
    other = tmp_path / "s4b" / "metrics" / "full" / "s4_test.json"
    _metrics(other, "s4", "test", 0.1, 0.1)
    with pytest.raises(ValueError, match=r"S4 is scored in two runs, .*s4 and .*s4b"):
        settings_table([*files, other], ["baseline", "full"], tmp_path / "t2.md", tmp_path / "t2.csv")
    # the val split, no published figures: only the settings measured
    rows = settings_table(files[:6], ["baseline", "full"], tmp_path / "t3.md", tmp_path / "t3.csv", split="val")
    assert list(rows[0]) == ["method", "figures", "S4 mIoU", "S4 F"] and rows[0]["S4 mIoU"] == "81.00"
    # the command line: the runs' folders; every variant they scored, in Table 2's order
    from ssp.cli import main

    out = tmp_path / "cli" / "table1.md"
    assert main(["table1", "--runs", *(str(tmp_path / r) for r in ("s4", "ms3", "avss")), "--out", str(out)]) == 0
    assert [line.split(" | ")[0] for line in out.read_text().splitlines()[2:5]] == ["| baseline", "| premask", "| full"]
    assert (tmp_path / "cli" / "table1.csv").is_file()
    assert main(["table1", "--runs", str(tmp_path / "s4"), str(tmp_path / "none"), "--out", str(out)]) == 1


def test_study_figures_plot_each_split_of_the_study_tables(tmp_path):
    """Fig. 5 (mIoU and F against lambda'_mask) and Fig. 7 (per Q1 wording) from the study tables."""
    from PIL import Image

    from ssp.reporting.figures import study_figure
    from ssp.reporting.tables import ablation_table

    for study, variants, splits in (("postmask_sweep", ["full-pm10", "full-pm0", "full-pm2.5"], ("val", "test")),
                                    ("prompt_study", ["full-q1a", "full-q1d"], ("test",))):
        files = []
        for k, v in enumerate(variants):
            for split in splits:
                files.append(tmp_path / study / "metrics" / v / f"s4_{split}.json")
                _metrics(files[-1], "s4", split, 0.3 + 0.01 * k, 0.5)
        table = tmp_path / study / "t.csv"
        ablation_table(files, variants, tmp_path / study / "t.md", table)
        out = study_figure(table, study, tmp_path / study / "fig.png", chosen_weight=10, note="a note")
        with Image.open(out) as img:
            assert img.size == (450 * len(splits), 340)      # one 4.5-inch panel per split, at 100 dpi
    with pytest.raises(KeyError):
        study_figure(table, "ablations", tmp_path / "x.png")


def test_the_dag_scores_against_the_masks_shards_as_against_the_files(tmp_path, semantic_root):
    """evaluate_shards (the evaluate rule: the run's manifest and masks shards) gives the metrics the
    dataset's own files give (the command line), on every task; a video whose ground truth the masks
    stage could not read is left out and named."""
    from ssp.config import Config
    from ssp.datasets.manifest import build_manifest, write_manifest
    from ssp.evaluation.scoring import evaluate, evaluate_shards
    from ssp.stages import STAGES

    cfg = Config.from_dict({"results": str(tmp_path / "results"), "vggish": {"weights": "random"},
                            "dataset": {"layout": "avsbench_semantic", "root": str(semantic_root)}})
    manifest = tmp_path / "manifest.csv"
    write_manifest(build_manifest(cfg), manifest)
    shard = tmp_path / "masks.h5"
    STAGES["masks"].run(cfg, manifest, "00000", shard)
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        for vid, T in (("vidA_0", 5), ("vidB_1", 5), ("vidC_2", 10)):
            g = h5.create_group(vid)
            class_scores = rng.normal(size=(T, 2, 224, 224)).astype(np.float32)
            g.create_dataset("class_scores", data=class_scores)
            g.create_dataset("scores", data=1 / (1 + np.exp(class_scores[:, 0] - class_scores[:, 1])))
            labels = np.zeros((T, 224, 224), np.uint8)
            labels[:, 20:110, 20:140] = 13 + rng.integers(0, 2)
            g.create_dataset("labels", data=labels)
    for task, split in (("s4", "train"), ("ms3", "val"), ("avss", "test"), ("avss", "val")):
        from_files = evaluate(task, semantic_root, pred, split, allow_missing=True)
        from_shards = evaluate_shards(task, manifest, [shard], pred, split)
        assert from_shards["no_truth"] == [] and from_shards["ground_truth"] == "masks shards"
        for key in ("root", "ground_truth", "no_truth"):
            from_files.pop(key, None), from_shards.pop(key, None)
        assert from_shards == from_files, (task, split)

    # a video the masks stage failed on: not in the shard, left out of the scores and named
    from ssp.datasets.manifest import read_manifest
    from ssp.evaluation.scoring import EvaluationError
    from ssp.io.store import ShardReader, ShardWriter

    df = read_manifest(manifest)
    df.loc[df["video_id"] == "vidC_2", "split"] = "val"     # avss val: vidB and vidC
    write_manifest(df, manifest)
    partial = tmp_path / "partial.h5"
    reader = ShardReader(shard)
    with ShardWriter(partial, {}) as w:
        for vid in ("vidA_0", "vidC_2"):
            w.add(vid, reader.read(vid))
    reader.close()
    r = evaluate_shards("avss", manifest, [partial], pred, "val")
    assert r["no_truth"] == ["vidB_1"] and r["videos"] == 1
    assert r["frames"] == 10                                   # vidC_2's alone
    with pytest.raises(EvaluationError, match="holds no avss test video"):
        evaluate_shards("avss", manifest, [shard], pred, "test")
    with pytest.raises(EvaluationError, match="vidB_1"):
        evaluate_shards("ms3", manifest, [partial], pred, "val")
