"""SynthAVS: a seeded synthetic dataset written in the AVSBench-semantic layout.

Each video has T one-second frames (5 for v1s/v1m, 10 for v2) with a few textured objects on a
static textured background. Every object has a class (one of the 71 AVSBench labels), and
each class has its own sound (a harmonic tone or a noise band). Objects are
sounding-and-moving, sounding-and-still, or silent-and-moving (plus silent-and-still
distractors): the cases that SSP's flow mask and text prompts are about. The ground truth
(`labels_rgb`, real palette) marks the visible pixels of the sounding objects.

Side files, kept out of the AVSBench layout under ``<root>/_synthavs/<uid>/``:
``flow.npz`` (ground-truth forward flow, [T-1, H, W, 2], pixels) and ``scene.json`` (the
objects, for tests and the metadata-based caption backend).
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.io import wavfile

from ssp.io.palette import colorize

SAMPLE_RATE = 16000
FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}
SIDE_DIR = "_synthavs"

# The 71 AVSBench-semantic labels (label2idx value = position + 1, background first).
LABELS = ["background"] + (
    "accordion airplane axe baby bassoon bell bird boat boy bus car cat cello clarinet clipper "
    "clock dog donkey drum duck elephant emergency-car erhu flute frying-food girl goose guitar "
    "gun guzheng hair-dryer handpan harmonica harp helicopter hen horse keyboard leopard lion man "
    "marimba missile-rocket motorcycle mower parrot piano pig pipa saw saxophone sheep sitar "
    "sorna squirrel tabla tank tiger tractor train trombone truck trumpet tuba ukulele utv "
    "vacuum-cleaner violin wolf woman"
).split()
SHAPES = ("circle", "square", "diamond")
VERBS = {True: "moves", False: "stands still"}


@dataclass
class SynthObject:
    label: str
    class_index: int   # 0-based AVSBench class index (label2idx - 1)
    shape: str
    radius: float      # pixels
    x0: float          # centre at frame 0 (pixels)
    y0: float
    vx: float          # pixels per frame (frames are 1 s apart)
    vy: float
    sounding: bool

    @property
    def moving(self) -> bool:
        return bool(self.vx or self.vy)

    def centre(self, t: int) -> tuple[float, float]:
        return self.x0 + self.vx * t, self.y0 + self.vy * t


def class_style(label: str, classes: tuple[str, ...]) -> dict:
    """Appearance and sound of a class: fixed by its position in the configured class list."""
    k = classes.index(label)
    hue = (k * 0.618034) % 1.0
    rgb = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + s)) for s in (0, 1 / 3, 2 / 3)])
    return {
        "colour": (60 + 190 * rgb).astype(np.float32),
        "shape": SHAPES[k % len(SHAPES)],
        "tone": k % 2 == 0,
        "freq": 220.0 * 2 ** (k * 7 / 12),
    }


def class_sound(label: str, classes: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] float32 waveform of a class: a 3-harmonic tone, or noise band-passed around its frequency."""
    st = class_style(label, classes)
    t = np.arange(n) / SAMPLE_RATE
    f = st["freq"]
    if st["tone"]:
        wave = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3))
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec[(freqs < f * 0.8) | (freqs > f * 1.25)] = 0
        wave = np.fft.irfft(spec, n)
    return (wave / (np.abs(wave).max() + 1e-8)).astype(np.float32)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
            img[..., c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    img = 110 + 18 * img + rng.normal(0, 6, img.shape)
    return img.astype(np.float32)


def _support(obj: SynthObject, t: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cx, cy = obj.centre(t)
    dx, dy = xx - cx, yy - cy
    if obj.shape == "circle":
        return dx ** 2 + dy ** 2 <= obj.radius ** 2
    if obj.shape == "square":
        return (np.abs(dx) <= obj.radius) & (np.abs(dy) <= obj.radius)
    return np.abs(dx) + np.abs(dy) <= obj.radius * 1.3


def object_texture(obj: SynthObject, seed: int) -> np.ndarray:
    """[2R+1, 2R+1] float32 in [0.55, 1]: a random, non-periodic pattern fixed to the object.

    Non-periodic so that its motion is unambiguous (a stripe pattern moved by one period looks
    still); it moves with the object, so the true flow is the object's velocity.
    """
    R = int(np.ceil(obj.radius * 1.3)) + 1
    noise = np.random.default_rng(seed).random((2 * R + 1, 2 * R + 1)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.5)
    noise = (noise - noise.min()) / (noise.max() - noise.min() + 1e-6)
    return 0.55 + 0.45 * noise


def render(objects: list[SynthObject], background: np.ndarray, t: int, classes: tuple[str, ...],
           textures: list[np.ndarray]):
    """Frame t: ([H, W, 3] uint8 image, [H, W] uint8 ground-truth classes, [H, W] int8 object id)."""
    size = background.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = background.copy()
    labels = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int8)
    for i, (obj, tex) in enumerate(zip(objects, textures)):  # later objects are drawn over earlier ones
        m = _support(obj, t, yy, xx)
        cx, cy = obj.centre(t)
        R = tex.shape[0] // 2
        ty = np.clip(np.round(yy[m] - cy).astype(int) + R, 0, 2 * R)
        tx = np.clip(np.round(xx[m] - cx).astype(int) + R, 0, 2 * R)
        img[m] = class_style(obj.label, classes)["colour"] * tex[ty, tx, None]
        labels[m] = obj.class_index if obj.sounding else 0
        owner[m] = i
    return np.clip(img, 0, 255).astype(np.uint8), labels, owner


def true_flow(objects: list[SynthObject], owner: np.ndarray) -> np.ndarray:
    """[H, W, 2] forward flow (dx, dy) from frame t to t+1 given frame t's owner map."""
    flow = np.zeros(owner.shape + (2,), np.float32)
    for i, obj in enumerate(objects):
        flow[owner == i] = (obj.vx, obj.vy)
    return flow


def sample_objects(subset: str, size: int, classes: tuple[str, ...], max_objects: int,
                   rng: np.random.Generator) -> list[SynthObject]:
    """Objects of one video: which sound, which move, where they start and how fast they go."""
    n = int(rng.integers(1 if subset == "v1s" else 2, max(max_objects, 2) + 1))
    n_sounding = 1 if subset == "v1s" else int(rng.integers(1, n + 1))
    if subset == "v1m":
        n_sounding = max(2, n_sounding) if n >= 2 else 1
    labels = rng.choice(classes, size=n, replace=len(classes) < n)
    T = FRAMES[subset]
    objs = []
    for i, label in enumerate(labels):
        sounding = i < n_sounding
        # sounding objects usually move and silent ones usually do not (the premise of SSP's flow
        # prompt), yet sounding-still and silent-moving objects occur too
        moving = bool(rng.random() < (0.75 if sounding else 0.35))
        r = float(rng.uniform(0.09, 0.16) * size)
        speed = float(rng.uniform(0.02, 0.045) * size) if moving else 0.0
        ang = float(rng.uniform(0, 2 * np.pi))
        vx, vy = round(speed * np.cos(ang)), round(speed * np.sin(ang))
        if moving and vx == 0 and vy == 0:
            vx = 1
        # keep the whole path inside the frame
        lo_x, hi_x = r - min(0, vx * (T - 1)), size - r - max(0, vx * (T - 1))
        lo_y, hi_y = r - min(0, vy * (T - 1)), size - r - max(0, vy * (T - 1))
        x0 = float(rng.uniform(lo_x, max(lo_x, hi_x)))
        y0 = float(rng.uniform(lo_y, max(lo_y, hi_y)))
        objs.append(SynthObject(str(label), LABELS.index(str(label)), class_style(str(label), classes)["shape"],
                                r, x0, y0, float(vx), float(vy), sounding))
    rng.shuffle(objs)  # drawing order, so silent objects may occlude sounding ones
    return objs


def _where(obj: SynthObject, size: int) -> str:
    col = ("left", "centre", "right")[min(2, int(3 * obj.x0 / size))]
    row = ("top", "middle", "bottom")[min(2, int(3 * obj.y0 / size))]
    return f"{row} {col}"


def scene_description(objects: list[SynthObject], size: int) -> dict:
    return {
        "objects": [dict(asdict(o), moving=o.moving, where=_where(o, size)) for o in objects],
        "sounding": sorted({o.label for o in objects if o.sounding}),
        "sentences": [f"a {o.label} {VERBS[o.moving]} at the {_where(o, size)}" for o in objects],
    }


def write_video(root: Path, subset: str, split: str, uid: str, size: int, classes: tuple[str, ...],
                max_objects: int, rng: np.random.Generator) -> dict:
    """Write one video in the AVSBench-semantic layout plus its side files; return its scene."""
    T = FRAMES[subset]
    objects = sample_objects(subset, size, classes, max_objects, rng)
    background = _background(size, rng)
    textures = [object_texture(o, int(rng.integers(2**31))) for o in objects]
    vdir = root / subset / uid
    for d in ("frames", "labels_rgb", "labels_semantic"):
        (vdir / d).mkdir(parents=True, exist_ok=True)
    flows = []
    masked = [0] if (subset == "v1s" and split == "train") else range(T)
    for t in range(T):
        img, labels, owner = render(objects, background, t, classes, textures)
        Image.fromarray(img).save(vdir / "frames" / f"{t}.jpg", quality=95)
        if t in masked:
            Image.fromarray(colorize(labels)).save(vdir / "labels_rgb" / f"{t}.png")
            Image.fromarray(labels).save(vdir / "labels_semantic" / f"{t}.png")
        if t < T - 1:
            flows.append(true_flow(objects, owner))
    audio = 0.01 * rng.standard_normal(T * SAMPLE_RATE).astype(np.float32)
    for obj in objects:
        if obj.sounding:
            audio += 0.3 * class_sound(obj.label, classes, T * SAMPLE_RATE, rng)
    audio = np.clip(audio, -1, 1)
    wavfile.write(vdir / "audio.wav", SAMPLE_RATE, (audio * 32767).astype(np.int16))
    side = root / SIDE_DIR / uid
    side.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(side / "flow.npz", flow=np.stack(flows).astype(np.float16))
    scene = scene_description(objects, size)
    (side / "scene.json").write_text(json.dumps(scene, indent=1))
    return scene


def _clear_previous(root: Path) -> None:
    """Remove an earlier SynthAVS from ``root`` (only if its marker file says it is one)."""
    if not root.exists():
        return
    if not (root / "SYNTHETIC.txt").is_file():
        if any(root.iterdir()):
            raise FileExistsError(f"{root} is not empty and holds no SynthAVS marker; refusing to write into it")
        return
    for name in ("v1s", "v1m", "v2", SIDE_DIR):
        shutil.rmtree(root / name, ignore_errors=True)


def _split_of(i: int, n: int, train: float, val: float) -> str:
    n_train, n_val = round(n * train), round(n * val)
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def generate(root: str | Path, *, seed: int, videos: dict[str, int], train: float, val: float,
             image_size: int, classes: tuple[str, ...], max_objects: int, progress: bool = True) -> int:
    """Generate SynthAVS under ``root``; deterministic for a seed. Returns the number of videos."""
    from tqdm import tqdm

    unknown = [c for c in classes if c not in LABELS[1:]]
    if unknown:
        raise ValueError(f"synthetic.classes: {unknown} are not AVSBench labels")
    root = Path(root)
    _clear_previous(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [(s, i) for s in ("v1s", "v1m", "v2") for i in range(videos.get(s, 0))]
    for subset, i in tqdm(jobs, desc="SynthAVS", disable=not progress):
        rng = np.random.default_rng([seed, ("v1s", "v1m", "v2").index(subset), i])
        split = _split_of(i, videos[subset], train, val)
        vid = f"synth-{subset}-{i:04d}"
        start = int(rng.integers(0, 5))
        uid = f"{vid}_{start}"
        scene = write_video(root, subset, split, uid, image_size, tuple(classes), max_objects, rng)
        rows.append({"vid": vid, "uid": uid, "s_min": 0, "s_sec": start,
                     "a_obj": "_".join(scene["sounding"]), "split": split, "label": subset})
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        w.writeheader()
        w.writerows(rows)
    (root / "label2idx.json").write_text(json.dumps({n: i + 1 for i, n in enumerate(LABELS)}, indent=1))
    (root / "SYNTHETIC.txt").write_text(
        f"SynthAVS generated by ssp (seed={seed}); synthetic data, not AVSBench.\n")
    return len(rows)


def load_scene(root: str | Path, uid: str) -> dict:
    return json.loads((Path(root) / SIDE_DIR / uid / "scene.json").read_text())


def load_true_flow(root: str | Path, uid: str) -> np.ndarray:
    with np.load(Path(root) / SIDE_DIR / uid / "flow.npz") as z:
        return z["flow"].astype(np.float32)
