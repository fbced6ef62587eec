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
    with pytest.raises(MediaError, match="broken.mp4: decord: cannot decode video"):
        decode_video_frames(bad, 5, 32)
    with pytest.raises(MediaError, match="broken.mp4"):
        decode_audio(bad)


# ----------------------------------------------------------------------------- two decoders

def _write(path, **kw):
    """A clip made with PyAV (``tests/io/make_clips.py``), in a process of its own: decord, once
    imported, brings FFmpeg libraries of its own, beside which PyAV's VP9 encoder fails to open."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    maker = Path(__file__).with_name("make_clips.py")
    subprocess.run([sys.executable, str(maker), str(path), json.dumps(kw)], check=True, timeout=120)
    return path


@pytest.mark.parametrize("name", ["chaplin.mp4", "fire2.mp4", "no_audio.mp4", "big_buck_bunny_432_433.webm",
                                  "video_with_failing_audio.mp4"])
def test_both_decoders_give_the_same_frames(media, name):
    """decord and PyAV apply the same 1-fps rule and padding to a file both can read."""
    from ssp.io.media import _decord_frames, _pyav_frames

    a, n_a = _decord_frames(media / name, 5)
    b, n_b = _pyav_frames(media / name, 5)
    assert n_a == n_b and len(a) == len(b) == 5
    for x, y in zip(a, b):   # the same frames; colour conversion may round differently
        assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).mean() < 2.0


@pytest.mark.parametrize("name", ["chaplin.mp4", "fire2.mp4", "big_buck_bunny_432_433.webm"])
def test_both_decoders_give_the_same_audio(media, name):
    from ssp.io.media import _decord_audio, _pyav_audio

    a, b = np.asarray(_decord_audio(media / name, 16000)).reshape(-1), _pyav_audio(media / name, 16000)
    assert abs(len(a) - len(b)) < 0.02 * 16000
    n = min(len(a), len(b)) // 1600 * 1600                # the same loudness, 0.1 s by 0.1 s (their
    rms = [np.sqrt((x[:n].reshape(-1, 1600) ** 2).mean(1)) for x in (a, b)]   # resamplers' phases differ)
    assert np.corrcoef(*rms)[0, 1] > 0.99 and np.abs(rms[0] - rms[1]).max() < 0.01


def test_webm_without_duration_metadata_is_read_by_pyav(tmp_path):
    """A VP9/Opus webm written through a non-seekable stream has no duration; decord cannot read
    it, PyAV does, with AVSBench's 1-fps rule (second l: frame 10 l + 9 at 10 fps)."""
    import decord

    from ssp.io.media import read_audio, read_video

    clip = _write(tmp_path / "recorded.webm", codec="libvpx-vp9", audio="libopus", seekable=False)
    with pytest.raises(Exception, match="duration"):
        decord.VideoReader(str(clip))
    frames, n_valid, decoder = read_video(clip, 5)
    assert decoder == "pyav" and n_valid == 3 and len(frames) == 5 and frames[0].shape == (48, 64, 3)
    assert [round(float(f.mean()) / 8) for f in frames] == [9, 19, 29, 29, 29]   # the last one repeated
    wav, _ = read_audio(clip)
    assert abs(len(wav) / 16000 - 3) < 0.1


def test_odd_pixel_format_is_read_by_pyav(tmp_path):
    """A 1x1 yuv444p clip: decord's copy fails ("The size must exactly match"); PyAV reads it."""
    from ssp.io.media import read_video

    clip = _write(tmp_path / "odd.mp4", size=(1, 1), pix_fmt="yuv444p", seconds=2)
    frames, n_valid, decoder = read_video(clip, 2)
    assert decoder == "pyav" and n_valid == 2 and frames[0].shape == (1, 1, 3)


def test_audio_shorter_than_the_video_is_read_and_padded(tmp_path):
    from ssp.io.media import fit_audio, read_audio, read_video

    clip = _write(tmp_path / "short_audio.mp4", audio="aac", seconds=3, audio_seconds=1)
    assert read_video(clip, 3)[1] == 3
    wav, _ = read_audio(clip)
    out, n_valid = fit_audio(wav, 3, 16000)
    assert out.shape == (48000,) and 0.8 * 16000 < n_valid < 1.3 * 16000 and not out[n_valid:].any()


def test_audio_decord_cannot_open_is_read_by_pyav(media, monkeypatch):
    import ssp.io.media as m

    def refuse(path, rate):
        raise m.MediaError(f"{path}: cannot decode audio (decord refuses)")

    monkeypatch.setattr(m, "_decord_audio", refuse)
    wav, decoder = m.read_audio(media / "chaplin.mp4")
    assert decoder == "pyav" and abs(len(wav) / 16000 - 9.64) < 0.15 and wav.dtype == np.float32
    with pytest.raises(m.MediaError, match="no audio stream"):
        m.read_audio(media / "no_audio.mp4")


def test_a_file_neither_decoder_reads_gives_both_reasons(tmp_path):
    from ssp.io.media import read_video

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(MediaError, match=r"broken.mp4: decord: cannot decode video .*; PyAV: cannot decode video"):
        read_video(bad, 5)


def test_frames_by_timestamp_when_the_stream_has_no_frame_rate():
    """Without a usable rate (a time base of 1k, as MediaRecorder's webm can report), second l's
    frame is the first at or after l + 15/16 s, uneven timestamps included; past the end, the last."""
    from ssp.io.media import _frames_by_time

    class Frame:
        rotation = 0

        def __init__(self, time):
            self.time = time

        def to_ndarray(self, format):
            return np.full((2, 2, 3), int(self.time * 10), np.uint8)

    times = [0.0, 0.5, 0.9, 0.95, 1.3, 1.97, 2.2, 2.6]          # uneven, 2.6 s long
    frames, n_valid, n = _frames_by_time((Frame(t) for t in times), 5)
    assert n_valid == 2 and n == len(times)                     # seconds 0 and 1; 2.9375 s is past the end
    assert [int(f[0, 0, 0]) for f in frames] == [9, 19, 26, 26, 26]
