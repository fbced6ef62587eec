"""VGGish: the front end against torchvggish, the network, padding rules and the stage."""
import numpy as np
import pytest
import torch
from conftest import make_config

from ssp.audio.vggish import VGGish, embed, load_vggish, log_mel_examples, pad_to_T
from ssp.io.weights import WeightsError


@pytest.mark.parametrize("seconds", [1, 3, 5, 10])
def test_front_end_gives_one_example_per_second(seconds):
    wav = np.random.default_rng(seconds).normal(0, 0.1, seconds * 16000)
    ex = log_mel_examples(wav)
    assert ex.shape == (seconds, 96, 64) and ex.dtype == np.float32


def test_front_end_matches_torchvggish():
    vggish_input = pytest.importorskip("torchvggish.vggish_input")
    rng = np.random.default_rng(0)
    t = np.arange(5 * 16000) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, t.size)
    ref = vggish_input.waveform_to_examples(wav, 16000, return_tensor=False)
    np.testing.assert_allclose(log_mel_examples(wav), ref, rtol=1e-5, atol=1e-5)


def test_network_loads_state_dict_and_gives_T_by_128(tmp_path):
    torch.manual_seed(1)
    state = VGGish().state_dict()
    assert {"features.0.weight", "features.13.bias", "embeddings.4.weight"} <= set(state)
    path = tmp_path / "vggish-10086976.pth"
    torch.save(state, path)
    model, digest = load_vggish(str(path))
    assert len(digest) == 16
    ex = log_mel_examples(np.random.default_rng(0).normal(0, 0.1, 5 * 16000))
    emb = embed(model, ex, batch_size=2)
    assert emb.shape == (5, 128) and (emb >= 0).all()          # after ReLU, no PCA
    ref = VGGish()
    ref.load_state_dict(state)
    with torch.no_grad():
        np.testing.assert_allclose(emb, ref.eval()(torch.from_numpy(ex)[:, None]).numpy(), atol=1e-5)


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(WeightsError, match="vggish-10086976.pth"):
        load_vggish(str(tmp_path / "vggish-10086976.pth"))


def test_padding_rules():
    emb = np.arange(3 * 128, dtype=np.float32).reshape(3, 128)
    s4, valid = pad_to_T(emb, 5, "v1s")           # S4 / MS3: repeat the last example
    assert valid.all() and (s4[3] == emb[2]).all() and (s4[4] == emb[2]).all()
    avss, valid = pad_to_T(emb, 5, "v2")          # AVSS: zeros, masked
    assert list(valid) == [True] * 3 + [False] * 2 and avss[3:].sum() == 0
    trimmed, valid = pad_to_T(np.ones((12, 128), np.float32), 10, "v2")
    assert trimmed.shape == (10, 128) and valid.all()


def test_stage_with_real_clips_and_random_weights(tmp_path, media):
    from ssp.datasets.manifest import build_manifest
    from ssp.io.store import ShardReader
    from ssp.reporting.summary import write_summary
    from ssp.stages.preprocess import run_audio
    from ssp.stages.vggish import run_vggish

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("chaplin.mp4", "fire2.mp4", "no_audio.mp4"):
        (folder / name).symlink_to(media / name)
    cfg = make_config(tmp_path, dataset={"layout": "videos", "root": str(folder)},
                      vggish={"weights": "random", "seed": 3, "batch_size": 4})
    df = build_manifest(cfg)
    run_audio(df, "00000", tmp_path / "audio.h5", cfg)
    failures = run_vggish(df, "00000", tmp_path / "audio.h5", tmp_path / "vggish.h5", cfg)
    assert [f.video_id for f in failures] == ["no_audio"]
    r = ShardReader(tmp_path / "vggish.h5")
    chaplin, fire = r.read("chaplin"), r.read("fire2")
    assert chaplin["vggish"].shape == (5, 128) and chaplin["valid"].all()
    assert list(fire["valid"]) == [True, True, False, False, False]   # 2.38 s, zero-padded
    assert r.attrs()["random_weights"]
    write_summary({"vggish": [tmp_path / "vggish.h5"]}, 3, tmp_path / "s.csv", tmp_path / "s.md")
    assert "RANDOM weights" in (tmp_path / "s.md").read_text()
