"""Smoke tests of the benchmark scripts on tiny settings, above all the GPU ones, so that a lent
GPU's few minutes are not lost to a script error: every figure benchmarks/gpu.sh asks for comes
out as a JSON line. The figures themselves are not checked (benchmarks are never timed tests)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, timeout=600) -> list[dict]:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert not [r for r in rows if "error" in r], rows
    return rows


def test_flow_benchmark_prints_every_figure(media):
    rows = _run([ROOT / "benchmarks" / "flow.py", "--perceiver-config", "tiny", "--sizes", "48x64", "96x128",
                 "--pairs", 2, "--hf-pairs", 2, "--cv-pairs", 2, "--equality-pairs", 2, "--hf-batch-sizes", 1, 2,
                 "--batch-sizes", 2, "--dtypes", "float32", "bfloat16", "--breakdown", "--frames", media / "chaplin.mp4"])
    [eq] = [r for r in rows if r.get("figure") == "flow_equality"]
    for att in ("sdpa", "folded"):
        assert eq[f"{att}_fp32_vs_hf_fp32_max_abs_px"] < 1e-3
        assert eq[f"{att}_bfloat16_vs_fp32_epe_mean_px"] > 0
    speed = {(r["backend"], r["size"]) for r in rows if r.get("figure") == "flow_pairs_per_s" and r["pairs_per_s"] > 0}
    for size in ("48x64", "96x128"):
        for backend in ("dis-medium", "farneback", "hf-eager-fp32-bs1", "hf-eager-fp32-bs2", "sdpa-float32-bs2",
                        "folded-float32-bs2", "sdpa-bfloat16-bs2", "folded-bfloat16-bs2", "hf-per-pair-loop"):
            assert (backend, size) in speed
    parts = [r for r in rows if r.get("figure") == "flow_breakdown_ms_per_pair"]
    assert {r["backend"] for r in parts} == {"hf-eager-fp32-bs4", "sdpa-bfloat16-bs2", "folded-bfloat16-bs2"}
    assert all(r["total"] > 0 and r["decoder"] > 0 for r in parts)


def test_training_benchmark_prints_every_figure():
    rows = _run([ROOT / "benchmarks" / "train_throughput.py", "--data", "synthetic", "--batch", 2, "--steps", 1,
                 "--warmup", 0, "--breakdown", "--count-ops"])
    speed = {r["setting"] for r in rows if r["figure"] == "train_videos_per_s" and r["videos_per_s"] > 0}
    assert speed == {"aavs", "ours-bs2"}
    parts = {r["setting"]: r for r in rows if r["figure"] == "train_step_breakdown_ms"}
    assert set(parts) == {"aavs", "ours-bs2"}
    for r in parts.values():
        assert all(r[f"{k}_ops"] > 0 for k in ("forward", "loss", "backward", "optimizer"))
    # the batched loss dispatches fewer operators for two videos than the reference for one
    assert parts["ours-bs2"]["loss_ops"] < parts["aavs"]["loss_ops"]
    assert [r["setting"] for r in rows if r["figure"] == "train_speedup"] == ["ours-bs2"]


def test_training_benchmark_trains_the_adapters_of_either_phase():
    """AAVS's adapters in every setting: phase 1 (frozen Swin, zero Swin adapters) back-propagates
    through less of the network and steps fewer parameters than phase 2."""
    ops = {}
    for phase in ("adapters-phase1", "adapters-phase2"):
        rows = _run([ROOT / "benchmarks" / "train_throughput.py", "--data", "synthetic", "--batch", 2, "--steps", 1,
                     "--warmup", 0, "--breakdown", "--count-ops", "--tune", phase])
        speed = [r for r in rows if r["figure"] == "train_videos_per_s"]
        assert {r["setting"] for r in speed} == {"aavs", "ours-bs2"} and all(r["tune"] == phase for r in speed)
        ops[phase] = {r["setting"]: r for r in rows if r["figure"] == "train_step_breakdown_ms"}
    for setting in ("aavs", "ours-bs2"):
        one, two = ops["adapters-phase1"][setting], ops["adapters-phase2"][setting]
        assert one["backward_ops"] < two["backward_ops"] and one["optimizer_ops"] < two["optimizer_ops"]
        assert one["forward_ops"] == two["forward_ops"]


def test_metrics_benchmark_prints_both_sides():
    """It also asserts that the histogram metrics equal the direct definitions on its inputs."""
    rows = _run([ROOT / "benchmarks" / "metrics.py", "--size", 32, "--repeats", 1])
    assert [r["figure"] for r in rows] == ["fscore_ms_per_video", "avss_counts_ms_per_frame"]
    assert all(len([v for v in r.values() if isinstance(v, float)]) == 2 for r in rows)


def test_page_benchmark_prints_size_build_and_load(tmp_path):
    rows = _run([ROOT / "benchmarks" / "page.py", "--videos", 3, "--frames", 2, "--workdir", tmp_path])
    assert [r["figure"] for r in rows] == ["page_size", "page_build", "page_load"]
    assert rows[0]["videos"] == 3 and rows[0]["by_kind"]["audio (wav)"] > 0


def test_footprint_benchmark_prints_bytes_codecs_and_projections(tmp_path, media):
    """Two windows of the real clips through the stages; a small predictions file of the trainer's keys."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    from ssp.io.store import ShardWriter

    rng = np.random.default_rng(0)
    pred = tmp_path / "test.h5"
    with ShardWriter(pred, {}) as w:
        for v in ("a", "b"):
            p = rng.random((3, 2, 32, 32), dtype=np.float32)
            w.add(v, {"scores": p[:, 1], "class_scores": p, "masks": p.argmax(1).astype(np.uint8)})
    rows = _run([ROOT / "benchmarks" / "footprint.py", "--max-videos", 2, "--predictions", pred])
    by = {}
    for r in rows:
        by.setdefault(r["figure"], []).append(r)
    assert by["content"][0]["videos"] == 2
    stages = {(r["format"], r["stage"]) for r in by["bytes_per_video"]}
    for fmt in ("format1", "format2"):
        assert {(fmt, s) for s in ("frames_source224", "frames_source_own", "audio", "flow", "flow_mask",
                                   "masks")} <= stages
    assert ("format2", "frames_video") in stages
    reads = {(r["frames_from"], r["format"], tuple(r["pixels"])) for r in by["network_frames_read_ms_per_video"]}
    assert reads == {("source224", "format1", ("stored",)), ("source224", "format2", ("frames",)),
                     ("source_own", "format1", ("stored",)), ("source_own", "format2", ("source_files",)),
                     ("video", "format2", ("stored",))}
    assert {r["stage"] for r in by["codec"]} >= {"frames", "audio", "flow", "flow_mask", "masks", "predictions"}
    assert {(r["task"], r["format"]) for r in by["prediction_bytes_per_frame"]} == {
        (t, f) for t in ("binary", "semantic") for f in ("format1", "format2")}
    proj = by["projection_shards"]
    assert {(r["setting"], r["frames_from"]) for r in proj} == {
        (s, m) for s in ("s4", "ms3", "avss") for m in ("frames_source224", "frames_source_own", "frames_video")}
    assert all(r["format2_gb"] < r["format1_gb"] and r["predictions_gb"] for r in proj)
