"""Decoding: frames at one per second as AVSBench samples them, audio at 16 kHz mono, masks.

Every function raises ``MediaError`` with the file and the reason; the stages turn that into
a per-video failure record and go on with the shard.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ssp.io.palette import rgb_to_labels


class MediaError(RuntimeError):
    """A file could not be decoded; the message names it and says why."""


def avsbench_frame_indices(fps: float, n_frames: int, T: int) -> tuple[list[int], int]:
    """Indices of the T frames AVSBench keeps, and how many of them lie inside the video.

    The reference preprocessing samples 16 frames per second, frame
    ``int(l * round(fps) + i / 16 * round(fps))`` for second l, sample i, keeps i = 15, and
    clips indices past the end to the last frame (a short clip repeats its last frame).
    """
    step = int(round(fps)) or 1
    raw = [int(k * step + (15 / 16) * step) for k in range(T)]
    n_valid = sum(1 for i in raw if i < n_frames)
    return [min(i, n_frames - 1) for i in raw], n_valid


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3] uint8 (bilinear, as cv2.resize in the reference)."""
    if img.shape[:2] == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_input(img: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3] uint8 as AAVS's image processor resizes a source frame
    for the network: PIL bilinear (antialiased when shrinking; ``avs/.models/
    preprocessor_config.json``: 384 x 384, resample 2)."""
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def sample_video_frames(path: str | Path, T: int) -> tuple[list[np.ndarray], int]:
    """The T frames sampled at 1 fps from a video file, at the source resolution, and the valid count."""
    frames, n_valid, _ = read_video(path, T)
    return frames, n_valid


def read_video(path: str | Path, T: int) -> tuple[list[np.ndarray], int, str]:
    """The T frames of AVSBench's 1-fps rule at the source resolution, the valid count, and the
    decoder that read them: decord first; what decord cannot read (a webm without duration
    metadata, as browsers' MediaRecorder writes; odd pixel formats) PyAV, FFmpeg's libraries, with
    the same rule. A file neither reads is a MediaError with both reasons."""
    try:
        return *_decord_frames(path, T), "decord"
    except MediaError as first:
        try:
            return *_pyav_frames(path, T), "pyav"
        except MediaError as second:
            raise MediaError(f"{path}: decord: {_reason(first, path)}; PyAV: {_reason(second, path)}") from None


def _reason(exc: MediaError, path) -> str:
    return str(exc).removeprefix(f"{path}: ")


def _decord_frames(path: str | Path, T: int) -> tuple[list[np.ndarray], int]:
    import decord

    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        n = len(vr)
        if n == 0:
            raise MediaError(f"{path}: the video stream has no frames")
        idx, n_valid = avsbench_frame_indices(vr.get_avg_fps(), n, T)
        frames = vr.get_batch(sorted(set(idx))).asnumpy()
    except MediaError:
        raise
    except Exception as exc:  # decord raises RuntimeError / DECORDError with the C++ message
        raise MediaError(f"{path}: cannot decode video ({_short(exc)})") from None
    pos = {j: k for k, j in enumerate(sorted(set(idx)))}
    return [frames[pos[i]] for i in idx], n_valid


MAX_FPS = 240   # a stream rate above this is a container's time base (MediaRecorder's 1k), not a frame rate


def _pyav_frames(path: str | Path, T: int) -> tuple[list[np.ndarray], int]:
    """AVSBench's 1-fps rule on a stream read until the frames it needs: with the stream's frame
    rate, frame k is the k-th decoded frame (the count need not be in the metadata), as decord
    counts; without a usable rate (none, or a time base such as 1000 fps), the frame of second l
    is the first whose timestamp reaches l + 15/16 s, the same instant for a constant rate."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0)
            if 0 < rate <= MAX_FPS:
                frames, n_valid, n = _frames_by_index(container.decode(stream), rate, T)
            else:
                frames, n_valid, n = _frames_by_time(container.decode(stream), T)
    except MediaError:
        raise
    except Exception as exc:  # av.error.* carry FFmpeg's message
        raise MediaError(f"{path}: cannot decode video ({_short(exc)})") from None
    if n == 0:
        raise MediaError(f"{path}: the video stream has no frames")
    return frames, n_valid


def _frames_by_index(decoded, rate: float, T: int) -> tuple[list, int, int]:
    """The 1-fps rule by frame index: (T frames, valid count, frames decoded)."""
    wanted = set(avsbench_frame_indices(rate, 10**9, T)[0])   # before clipping to the end
    keep, last, n, final = {}, None, 0, max(wanted)
    for frame in decoded:
        if n in wanted:
            keep[n] = _upright(frame)
        last, n = frame, n + 1
        if n > final:
            break
    if n == 0:
        return [], 0, 0
    idx, n_valid = avsbench_frame_indices(rate, n, T)
    if idx[-1] not in keep:   # clipped to the last frame, which the loop saw last
        keep[idx[-1]] = _upright(last)
    return [keep[i] for i in idx], n_valid, n


def _frames_by_time(decoded, T: int) -> tuple[list, int, int]:
    """The 1-fps rule by timestamp: second l's frame is the first at or after l + 15/16 s; past
    the end, the last frame (a short clip repeats it, as the index rule does), not counted valid."""
    out, last, n = [None] * T, None, 0
    for frame in decoded:
        t = float(frame.time) if frame.time is not None else n / 25.0
        for second in range(T):
            if out[second] is None and t >= second + 15 / 16:
                out[second] = _upright(frame)
        last, n = frame, n + 1
        if out[-1] is not None:
            break
    if n == 0:
        return [], 0, 0
    n_valid = sum(f is not None for f in out)
    return [f if f is not None else _upright(last) for f in out], n_valid, n


def _upright(frame) -> np.ndarray:
    """A PyAV frame as RGB, turned by its display matrix (a phone's rotated clip), as decord turns it."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round(getattr(frame, "rotation", 0) / 90) % 4   # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def decode_video_frames(path: str | Path, T: int, size: int) -> tuple[np.ndarray, int]:
    """[T, size, size, 3] uint8 frames sampled at 1 fps from a video file, and the valid count."""
    frames, n_valid = sample_video_frames(path, T)
    return np.stack([resize_image(f, size) for f in frames]), n_valid


def read_frame_bytes(paths: list[str]) -> list[bytes]:
    """The bytes of image files, each read once (``load_frame_files`` decodes them)."""
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise MediaError(f"{p}: frame file is missing")
        out.append(Path(p).read_bytes())
    return out


def load_frame_files(paths: list[str], blobs: list[bytes] | None = None) -> list[np.ndarray]:
    """The frames of image files, RGB uint8 at their own resolution; from ``blobs``, their bytes
    (``read_frame_bytes``), when the caller holds them already."""
    out = []
    for p, data in zip(paths, read_frame_bytes(paths) if blobs is None else blobs):
        try:
            out.append(decode_image_bytes(data))
        except OSError as exc:
            raise MediaError(f"{p}: cannot read image ({_short(exc)})") from None
    return out


def decode_image_bytes(data: bytes | np.ndarray) -> np.ndarray:
    """An image file's bytes -> RGB uint8 at its own resolution."""
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("RGB"))


def pack_files(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Image files' bytes as one uint8 array and the [len(blobs) + 1] offsets of each file's bytes
    in it (file k: ``data[offsets[k]:offsets[k + 1]]``)."""
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def unpack_files(data: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """``pack_files``'s images, decoded (``decode_image_bytes``)."""
    return [decode_image_bytes(data[offsets[k]:offsets[k + 1]]) for k in range(len(offsets) - 1)]


def read_frame_files(paths: list[str], size: int) -> np.ndarray:
    """[T, size, size, 3] uint8 from image files."""
    return np.stack([resize_image(f, size) for f in load_frame_files(paths)])


def read_mask(path: str, mask_format: str, size: int, num_classes: int, *, binary: bool = False) -> np.ndarray:
    """[size, size] uint8 ground truth read as AAVS reads it. ``binary``: {0, 1} by its AVS reader
    (``aavs_foreground``). Otherwise a colour (``rgb``) mask gives class indices by its AVSS reader
    (``avss/dataset.py`` 56-62: the RGB image resized to ``size`` by PIL's nearest, then matched
    to the palette, an unknown colour background); a grey AVSBench-object mask, {0, 1} as binary."""
    rgb = _mask_rgb(path)
    if binary or mask_format != "rgb":
        return aavs_foreground(rgb, size)
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))
    return rgb_to_labels(rgb, num_classes)


def aavs_foreground(rgb: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] mask image -> [size, size] uint8 {0, 1} as AAVS's AVS reader makes its binary
    ground truth (``avs/dataset.py`` 180-184): the image as OpenCV reads it (BGR), resized by
    ``cv2.resize`` (bilinear, its default), converted to grey, then > 0."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if bgr.shape[:2] != (size, size):
        bgr = cv2.resize(bgr, (size, size))
    return (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) > 0).astype(np.uint8)


def _mask_rgb(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise MediaError(f"{path}: mask file is missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise MediaError(f"{path}: cannot read mask ({_short(exc)})") from None


def read_video_masks(mask_paths: list, mask_format: str, size: int, num_classes: int, *,
                     binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A video's ground truth (``read_mask``): [T, size, size] uint8 and has_mask [T] (None = no mask)."""
    labels = np.zeros((len(mask_paths), size, size), np.uint8)
    has = np.zeros(len(mask_paths), bool)
    for t, p in enumerate(mask_paths):
        if p is not None:
            labels[t] = read_mask(p, mask_format, size, num_classes, binary=binary)
            has[t] = True
    return labels, has


def decode_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """[N] float32 mono waveform at ``sample_rate`` from a wav or a video's audio stream."""
    return read_audio(path, sample_rate)[0]


def read_audio(path: str | Path, sample_rate: int = 16000) -> tuple[np.ndarray, str]:
    """The mono waveform at ``sample_rate`` and the decoder that read it: decord's AudioReader
    first; what it cannot open, PyAV (resampled by ``av.AudioResampler``). A file without an
    audio stream, or that neither reads, is a MediaError (with both reasons)."""
    try:
        wav, decoder = _decord_audio(path, sample_rate), "decord"
    except MediaError as first:
        if "no audio stream" in str(first):
            raise
        try:
            wav, decoder = _pyav_audio(path, sample_rate), "pyav"
        except MediaError as second:
            if "no audio stream" in str(second):
                raise
            raise MediaError(f"{path}: decord: {_reason(first, path)}; PyAV: {_reason(second, path)}") from None
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise MediaError(f"{path}: the audio stream is empty")
    if not np.isfinite(wav).all():
        raise MediaError(f"{path}: decoded audio contains NaN or inf")
    return wav, decoder


def _decord_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    import decord

    try:
        ar = decord.AudioReader(str(path), sample_rate=sample_rate, mono=True)
        return ar[:].asnumpy()
    except Exception as exc:
        msg = _short(exc)
        if "audio stream" in msg.lower():
            raise MediaError(f"{path}: the file has no audio stream") from None
        raise MediaError(f"{path}: cannot decode audio ({msg})") from None


def _pyav_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = []
            for frame in container.decode(container.streams.audio[0]):
                parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]   # what it holds back
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode audio ({_short(exc)})") from None
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def fit_audio(wav: np.ndarray, T: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """Trim or zero-pad to exactly T seconds; return the waveform and the valid sample count.

    The VGGish stage applies the subset's padding rule (repeat the last example for S4/MS3,
    zeros with a mask for AVSS) from the valid count.
    """
    n = T * sample_rate
    n_valid = min(len(wav), n)
    out = np.zeros(n, np.float32)
    out[:n_valid] = wav[:n_valid]
    return out, n_valid


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    # decord prefixes messages with "[hh:mm:ss] /path/to/source.cc:NN: "
    if ".cc:" in line:
        line = line.split(": ", 1)[-1]
    return line[:300]
