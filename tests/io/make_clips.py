"""Awkward clips for the decoding tests, made with PyAV: ``python make_clips.py OUT '{"codec": ...}'``."""
import json
import sys
from pathlib import Path

import numpy as np


class _NoSeek:
    """A write-only stream: a muxer cannot go back to write the duration (as MediaRecorder's output)."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        return self.fh.write(data)


def write_clip(path, *, codec="libx264", fmt=None, size=(64, 48), pix_fmt="yuv420p", fps=10, seconds=3,
               audio=None, audio_seconds=None, seekable=True):
    """A clip made with PyAV: frame i is grey level 8 i; ``audio`` a codec for a 440 Hz mono tone."""
    import av

    with open(path, "wb") as fh:
        container = av.open(fh if seekable else _NoSeek(fh), "w", format=fmt or path.suffix[1:])
        v = container.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], pix_fmt
        a = None
        if audio:
            a = container.add_stream(audio, rate=48000)
            a.layout = "mono"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), (8 * i) % 256, np.uint8), format="rgb24")
            container.mux(v.encode(frame))
        if a is not None:
            n = a.codec_context.frame_size or 1024
            for k in range(int((audio_seconds or seconds) * 48000 / n)):
                t = (k * n + np.arange(n)) / 48000
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(samples, format="flt" if a.format.name == "flt" else "fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = 48000, k * n
                container.mux(a.encode(frame))
            container.mux(a.encode())
        container.mux(v.encode())
        container.close()
    return path



if __name__ == "__main__":
    write_clip(Path(sys.argv[1]), **json.loads(sys.argv[2]))
