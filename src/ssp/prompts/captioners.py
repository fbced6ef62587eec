"""SSP's two text prompts per video: Q1 -> A1 (scene description), Q2 with A1 -> A2 (sounding nouns).

Backends share one interface, ``caption(video_id, frames) -> (q1, a1, q2, a2)``:
  * ``minicpm-o``: MiniCPM-o-2.6 (the paper's model) via transformers AutoModel/AutoTokenizer
    from a local folder. Its code lives in the model folder, so loading runs that code:
    ``trust_remote_code`` must be set to true explicitly in config.
  * ``hf-vlm``: any transformers image-text-to-text model with a chat template, from a local folder.
  * ``file``: precomputed captions (JSON or CSV keyed by video id).
  * ``synthetic``: SynthAVS only: A1 and A2 written from the generator's scene description, with
    nouns dropped or added at given rates to study prompt quality. Marked synthetic in its output.
"""
from __future__ import annotations

import csv
import json
import logging
import re
import zlib
from pathlib import Path

import numpy as np

from ssp.io.weights import WeightsError, check_model_folder, load_complete

log = logging.getLogger(__name__)

# Fig. 7 (a)-(d), in its words: Q1 of increasing specificity; (d) is the paper's final prompt, which
# section 4.2 also gives (there with "object's").
Q1_VARIANTS = {
    "a": "Describe the video.",
    "b": "Describe the video with every objects location.",
    "c": 'Describe the video, give every objects location with their characteristic, with a format of '
         '"A NOUN VERB NOUN".',
    "d": 'Describe the video, give every objects location with their characteristic, with a format of '
         '"A NOUN VERB NOUN", for example: "a man plays a guitar".',
}
Q1_FINAL = Q1_VARIANTS["d"]
# Q2 with A1 inserted: section 4.2's wording (the default), or Fig. 7's shorter one
Q2_VARIANTS = {
    "paper": "According to the video, with {a1}, give the NOUN word that potentially produce sound.",
    "fig7": "According to the video, with {a1}, give the NOUN word that produce sound.",
}
Q2_TEMPLATE = Q2_VARIANTS["paper"]
def question2(a1: str, wording: str = "paper") -> str:
    """Q2 with A1 in place of "A_1" (section 4.2; ``wording`` ``fig7``: Fig. 7's)."""
    return Q2_VARIANTS[wording].format(a1=a1.strip().rstrip("."))


_LEAD = re.compile(r"^(?:.*?\b(?:are|is|include|includes|would be)\b\s*:?|.*?:)\s*", re.I)
_STOP = {"a", "an", "the", "some", "and", "or", "etc", "none", "noun", "nouns", "word", "words",
         "sound", "sounds"}


def parse_nouns(answer: str) -> list[str]:
    """A2 -> a clean, ordered, de-duplicated noun list ('dog', 'emergency car', ...)."""
    text = re.sub(r"[*_`#\"]", " ", answer.lower())
    text = re.sub(r"\([^)]*\)", " ", text)                         # parentheticals
    if ":" in text or re.search(r"\b(?:are|include)\b", text):
        text = "\n".join(_LEAD.sub("", line, count=1) for line in text.splitlines())
    parts = re.split(r"[,;\n/]|\band\b|\bor\b|\.\s", text)
    nouns: list[str] = []
    for part in parts:
        part = re.sub(r"^\s*(?:\d+[.)]|[-•])\s*", "", part)           # list markers
        words = [w for w in re.findall(r"[a-z][a-z-]*", part) if w not in _STOP]
        noun = " ".join(words).strip()
        if noun and noun not in nouns and len(words) <= 3:
            nouns.append(noun)
    return nouns


def strip_special_tokens(text: str, tokens: list[str]) -> tuple[str, list[str]]:
    """``text`` without any of ``tokens`` (longest first), its spaces tidied; and those found, in
    the order they first occur."""
    found = sorted((t for t in tokens if t in text), key=text.index)
    for t in sorted(found, key=len, reverse=True):
        text = text.replace(t, " ")
    return (re.sub(r"\s+", " ", text).strip() if found else text.strip()), found


# --------------------------------------------------------------------------- backends

class TwoTurnChat:
    """Q1 with the frames, then Q2 (with A1 inserted) as the next turn of the same conversation."""
    q2_wording = "paper"   # Q2_VARIANTS key (captions.q2_variant)
    native_frames = True   # the source's frames at their own size (captions.frames: native)
    last_removed: dict = {}   # the last caption's special tokens taken out, per answer ("a1", "a2")

    name = "chat"

    def __init__(self, q1_variant: str = "d"):
        self.q1 = Q1_VARIANTS[q1_variant]
        self.q1_variant = q1_variant

    def frames_setting(self) -> str:
        return "native" if self.native_frames else "shard"

    def ask(self, images: list, history: list[tuple[str, str]], question: str) -> str:
        raise NotImplementedError

    @staticmethod
    def turns(history: list[tuple[str, str]], question: str):
        """(is_first, question, answer or None) for each user turn; images go with the first."""
        for i, (q, a) in enumerate(list(history) + [(question, None)]):
            yield i == 0, q, a

    def caption(self, video_id: str, frames) -> tuple[str, str, str, str]:
        """``frames``: the video's 1-fps frames, [H, W, 3] uint8 each (any size), given to the model
        as PIL RGB images."""
        from PIL import Image

        images = [Image.fromarray(np.asarray(f, dtype=np.uint8)).convert("RGB") for f in frames]
        self.last_removed = {}
        a1 = self._answer(video_id, "A1", self.ask(images, [], self.q1))
        q2 = question2(a1, self.q2_wording)
        a2 = self._answer(video_id, "A2", self.ask(images, [(self.q1, a1)], q2))
        return self.q1, a1, q2, a2

    def _answer(self, video_id: str, which: str, answer: str) -> str:
        """An answer as it is stored and put into the next turn: the tokenizer's special tokens taken
        out (a model's code may decode without skipping them, and an ``<image>`` or an audio token
        in A1 would break Q2's turn), noted in ``last_removed``; logged when it may be cut."""
        self._check_cut(video_id, which, answer)
        text, removed = strip_special_tokens(answer, self.special_tokens())
        if removed:
            self.last_removed[which.lower()] = removed
            log.warning("captions: %s: special tokens taken out of %s: %s", video_id, which, " ".join(removed))
        return text

    def special_tokens(self) -> list[str]:
        """The tokenizer's special tokens (its named ones and every added token marked special)."""
        tok = self._tokenizer()
        if tok is None:
            return []
        names = set(getattr(tok, "all_special_tokens", []) or [])
        for added in (getattr(tok, "added_tokens_decoder", None) or {}).values():
            if getattr(added, "special", False):
                names.add(str(added.content))
        return sorted((n for n in names if n), key=len, reverse=True)

    def _tokenizer(self):
        return getattr(self, "tokenizer", None) or getattr(getattr(self, "processor", None), "tokenizer", None)

    def _check_cut(self, video_id: str, which: str, answer: str) -> None:
        """Log an answer that reached max_new_tokens: generation stopped there, so it may be cut."""
        tokenizer = self._tokenizer()
        limit = getattr(self, "max_new_tokens", None)
        if tokenizer is None or limit is None or not hasattr(tokenizer, "encode"):
            return
        if len(tokenizer.encode(answer, add_special_tokens=False)) >= limit:
            log.warning("captions: %s: %s reached captions.max_new_tokens (%d) and may be cut", video_id, which, limit)


MINICPMO_HOLDS = "a snapshot of openbmb/MiniCPM-o-2_6 (its weights, tokenizer and *.py files)"
MINICPMO_TRANSFORMERS = "4.44.2"   # the version MiniCPM-o-2.6's model card pins
MINICPMO_ENV_MESSAGE = (
    "MiniCPM-o-2.6's own code (the *.py files in its folder) was written for transformers "
    f"{MINICPMO_TRANSFORMERS} and imports names that later versions removed (LogitsWarper, "
    "WHISPER_ATTENTION_CLASSES); this environment has transformers {version}. Run the captions stage in "
    "its own environment: `snakemake --use-conda` does so (envs/minicpmo.yaml); without conda, "
    "`make minicpmo-env` makes .venv-minicpmo and 'captions.python: .venv-minicpmo/bin/python' runs "
    "the stage there (docs/install.md, 'The MiniCPM-o environment').")


def transformers_version() -> str | None:
    """The installed transformers' version, read from its metadata (no import), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def minicpmo_environment_warning(cfg, *, uses_conda: bool) -> str | None:
    """What to say when a run would load MiniCPM-o's code under a transformers it cannot import with:
    backend minicpm-o, no conda environment of its own (--use-conda) and no captions.python, and
    this environment's transformers later than 4.47. A warning, not an error: a patched copy of
    MiniCPM-o's code may run on it."""
    from packaging.version import Version

    c = cfg.captions
    if c.backend != "minicpm-o" or uses_conda or c.python:
        return None
    installed = transformers_version()
    if installed is None or Version(installed) < Version("4.48"):
        return None
    return ("captions.backend is minicpm-o, but the captions rules would run in this environment: "
            + MINICPMO_ENV_MESSAGE.format(version=installed))


class MiniCPMo(TwoTurnChat):
    name = "minicpm-o"

    def __init__(self, folder: str | None, *, trust_remote_code: bool, q1_variant: str = "d",
                 max_new_tokens: int = 256, device: str = "auto", model=None, tokenizer=None,
                 trust_file: str | Path | None = None, code_id: str | None = None):
        """``trust_file``, ``code_id``: where the hashes of the code trusted to run are recorded, and
        under which name (``ssp.io.verify``); the folder's code must be exactly that code."""
        super().__init__(q1_variant)
        self.max_new_tokens = max_new_tokens
        if model is None:
            if not trust_remote_code:
                from ssp.io.verify import TRUST_MESSAGE

                raise PermissionError(TRUST_MESSAGE)
            self._check_trusted(folder, trust_file, code_id)
            model, tokenizer = self._load(folder, device)
        self.model, self.tokenizer = model, tokenizer
        self.model_id = str(folder)

    @staticmethod
    def _check_trusted(folder: str | None, trust_file, code_id: str | None) -> None:
        from ssp.io.verify import TRUST_COMMAND, untrusted

        if not folder or not Path(folder).is_dir():
            return   # _load names what is missing
        if trust_file is None:
            raise PermissionError(f"'captions.model': no trust file names the code of {folder}; run {TRUST_COMMAND}")
        problem = untrusted(folder, code_id or str(Path(folder).resolve()), Path(trust_file))
        if problem:
            raise PermissionError(f"'captions.model': {problem}")

    @staticmethod
    def _load(folder: str | None, device: str):
        """MiniCPM-o's own code from its folder, vision only (no audio encoder, no TTS), every weight
        of that model from the checkpoint (a missing one is an error, never a random value)."""
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        from ssp.io.devices import pick_device

        path = check_model_folder(folder, "captions.model", MINICPMO_HOLDS)
        dev = pick_device(device)
        dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
        # transformers 4.44 (MiniCPM-o's) knows the argument as torch_dtype; 5.x as dtype
        dtype_arg = "torch_dtype" if int(transformers.__version__.split(".")[0]) < 5 else "dtype"
        log.warning("captions: loading %s with trust_remote_code=True (its own code runs)", path)
        try:
            model = load_complete(AutoModel, path, "captions.model", MINICPMO_HOLDS, trust_remote_code=True,
                                  init_vision=True, init_audio=False, init_tts=False, **{dtype_arg: dtype})
        except ImportError as exc:
            raise RuntimeError(f"'captions.model': {path}: {exc}. "
                               + MINICPMO_ENV_MESSAGE.format(version=transformers.__version__)) from exc
        model = model.to(dev).eval()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"'captions.model': no tokenizer loads from {path} ({exc}); it should hold "
                               f"{MINICPMO_HOLDS}") from exc
        return model, tokenizer

    def settings(self) -> dict:
        return {"q1_variant": self.q1_variant, "q2": self.q2_wording, "frames": self.frames_setting(),
                "max_new_tokens": self.max_new_tokens, "sampling": False, "max_slice_nums": 1, "use_image_id": False}

    def ask(self, images, history, question):
        msgs = []
        for first, q, a in self.turns(history, question):
            msgs.append({"role": "user", "content": (list(images) if first else []) + [q]})
            if a is not None:
                msgs.append({"role": "assistant", "content": [a]})
        return self.model.chat(msgs=msgs, tokenizer=self.tokenizer, sampling=False,
                               max_new_tokens=self.max_new_tokens, use_image_id=False, max_slice_nums=1)


class HFVLM(TwoTurnChat):
    name = "hf-vlm"

    def __init__(self, folder: str | None, *, q1_variant: str = "d", max_new_tokens: int = 256,
                 device: str = "auto"):
        super().__init__(q1_variant)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from ssp.io.devices import pick_device

        what = "an image-text-to-text model with a chat template (weights and processor files)"
        path = check_model_folder(folder, "captions.model", what)
        self.device = pick_device(device)
        self.model = load_complete(AutoModelForImageTextToText, path, "captions.model", what).to(self.device).eval()
        try:
            self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"'captions.model': no processor loads from {path} ({exc}); it should hold {what}") from exc
        self.max_new_tokens, self.model_id = max_new_tokens, str(path)

    def settings(self) -> dict:
        return {"q1_variant": self.q1_variant, "q2": self.q2_wording, "frames": self.frames_setting(),
                "max_new_tokens": self.max_new_tokens, "do_sample": False}

    def ask(self, images, history, question):
        import torch

        msgs = []
        for first, q, a in self.turns(history, question):
            content = [{"type": "image"} for _ in images] if first else []
            msgs.append({"role": "user", "content": content + [{"type": "text", "text": q}]})
            if a is not None:
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
        prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True)
        inputs = self.processor(text=prompt, images=[list(images)], return_tensors="pt")
        inputs.pop("token_type_ids", None)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class FileCaptions:
    """Precomputed captions: JSON {video_id: {a1, a2[, q1, q2]}} / list of records, or CSV with those columns."""
    q2_wording = "paper"   # Q2_VARIANTS key (captions.q2_variant)

    name = "file"

    def __init__(self, path: str | None, q1_variant: str = "d"):
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"'captions.file': caption file {path!r} does not exist")
        self.path, self.q1 = Path(path), Q1_VARIANTS[q1_variant]
        self.model_id = str(self.path)
        self.table = self._read(self.path)

    @staticmethod
    def _read(path: Path) -> dict[str, dict]:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        else:
            data = json.loads(path.read_text())
            rows = [dict(v, video_id=k) for k, v in data.items()] if isinstance(data, dict) else data
        table = {}
        for r in rows:
            if not {"video_id", "a1", "a2"} <= set(r):
                raise ValueError(f"{path}: every record needs video_id, a1 and a2; got {sorted(r)}")
            table[str(r["video_id"])] = r
        return table

    def settings(self) -> dict:
        return {"file": str(self.path)}

    def caption(self, video_id, frames):
        if video_id not in self.table:
            raise KeyError(f"{self.path} has no captions for video {video_id!r}")
        r = self.table[video_id]
        return r.get("q1") or self.q1, r["a1"], r.get("q2") or question2(r["a1"], self.q2_wording), r["a2"]


class SyntheticCaptions:
    """SynthAVS: A1/A2 from the scene description, with controlled noun drops and additions."""
    q2_wording = "paper"   # Q2_VARIANTS key (captions.q2_variant)

    name = "synthetic"
    model_id = "synthavs-scene-description"

    def __init__(self, data_root: str | Path, *, drop_rate: float = 0.0, add_rate: float = 0.0,
                 seed: int = 0, q1_variant: str = "d"):
        self.root, self.drop, self.add, self.seed = Path(data_root), drop_rate, add_rate, seed
        self.q1 = Q1_VARIANTS[q1_variant]

    def settings(self) -> dict:
        return {"drop_rate": self.drop, "add_rate": self.add, "seed": self.seed, "synthetic": True}

    def caption(self, video_id, frames):
        from ssp.datasets.synthavs import LABELS, load_scene

        try:
            scene = load_scene(self.root, video_id)
        except FileNotFoundError:
            raise FileNotFoundError(f"no SynthAVS scene for {video_id!r} under {self.root} "
                                    "(the synthetic caption backend needs the synthetic dataset)") from None
        rng = np.random.default_rng([self.seed, zlib.crc32(video_id.encode())])
        a1 = ". ".join(s[0].upper() + s[1:] for s in scene["sentences"]) + "."
        nouns = [n for n in scene["sounding"] if rng.random() >= self.drop]
        others = [o["label"] for o in scene["objects"] if not o["sounding"]] + list(rng.choice(LABELS[1:], 2))
        nouns += [n for n in others if rng.random() < self.add and n not in nouns]
        a2 = ", ".join(n.replace("-", " ") for n in nouns) if nouns else "none"
        return self.q1, a1, question2(a1, self.q2_wording), a2


def make_captioner(cfg, data_root: str | Path):
    captioner = _captioner(cfg.captions, data_root, cfg.raw)
    captioner.q2_wording = cfg.captions.q2_variant
    if isinstance(captioner, TwoTurnChat):
        captioner.native_frames = cfg.captions.frames == "native"
    if "captions.model" in cfg.models and cfg.captions.backend in ("minicpm-o", "hf-vlm"):   # fetched by hub id
        captioner.model_id = cfg.model_provenance(["captions.model"])["captions.model"]   # with its commit
    return captioner


def _captioner(c, data_root: str | Path, raw: dict):
    if c.backend == "synthetic":
        return SyntheticCaptions(data_root, drop_rate=c.synthetic.drop_rate, add_rate=c.synthetic.add_rate,
                                 seed=c.synthetic.seed, q1_variant=c.q1_variant)
    if c.backend == "file":
        return FileCaptions(c.file, c.q1_variant)
    if c.backend == "hf-vlm":
        return HFVLM(c.model, q1_variant=c.q1_variant, max_new_tokens=c.max_new_tokens, device=c.device)
    from ssp.io import hub
    from ssp.io.verify import code_identity, trust_path

    return MiniCPMo(c.model, trust_remote_code=c.trust_remote_code, q1_variant=c.q1_variant,
                    max_new_tokens=c.max_new_tokens, device=c.device, trust_file=trust_path(raw),
                    code_id=code_identity(hub.get_key(raw, "captions.model"), c.model or "."))


__all__ = ["MiniCPMo", "HFVLM", "FileCaptions", "SyntheticCaptions", "make_captioner", "parse_nouns",
           "Q1_VARIANTS", "WeightsError"]
