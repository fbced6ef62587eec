"""Decoding of every real clip in ../shared/media, and the AVSBench sampling rules."""
import numpy as np
import pytest

from ssp.io.media import MediaError, avsbench_frame_indices, decode_audio, decode_video_frames, fit_audio


def test_frame_indices_follow_reference():
    # 25 fps: second l keeps frame int(l*25 + 15/16*25) = 25 l + 23
    idx, n_valid = avsbench_frame_indices(25.0, 250, 5)
    assert idx == [23, 48, 73, 98, 123] and n_valid == 5
    # a 2.4 s clip at 10.505 fps (round -> 11): indices past the end repeat the last frame
    idx, n_valid = avsbench_frame_indices(10.505, 25, 5)
    assert idx == [10, 21, 24, 24, 24] and n_valid == 2


def test_fit_audio_pads_and_trims():
    wav, n = fit_audio(np.ones(100, np.float32), 1, 80)
    assert wav.shape == (80,) and n == 80
    wav, n = fit_audio(np.ones(50, np.float32), 2, 40)
    assert wav.shape == (80,) and n == 50 and wav[50:].sum() == 0


@pytest.mark.parametrize("name,valid", [("chaplin.mp4", 5), ("fire2.mp4", 2),
                                        ("video_with_failing_audio.mp4", 5),
                                        ("big_buck_bunny_432_433.webm", 1), ("no_audio.mp4", 2)])
def test_decode_frames_of_every_clip(media, name, valid):
    frames, n_valid = decode_video_frames(media / name, 5, 64)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
    assert n_valid == valid
    assert frames.std() > 1  # real picture content, not a blank array


def test_chaplin_audio_is_resampled_to_16k_mono(media):
    wav = decode_audio(media / "chaplin.mp4", 16000)
    assert wav.ndim == 1 and wav.dtype == np.float32
    assert abs(len(wav) / 16000 - 9.6) < 0.15  # 9.64 s clip
    assert 0.01 < np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("name,seconds", [("fire2.mp4", 2.38), ("big_buck_bunny_432_433.webm", 1.0),
                                          ("video_with_failing_audio.mp4", 11.26)])
def test_audio_of_other_clips(media, name, seconds):
    wav = decode_audio(media / name, 16000)
    assert abs(len(wav) / 16000 - seconds) < 0.3


def test_no_audio_stream_is_a_clear_error(media):
    with pytest.raises(MediaError, match=r"no_audio.mp4: the file has no audio stream"):
        decode_audio(media / "no_audio.mp4")


def test_undecodable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(MediaError, match="broken.mp4: cannot decode video"):
        decode_video_frames(bad, 5, 32)
    with pytest.raises(MediaError, match="broken.mp4"):
        decode_audio(bad)
