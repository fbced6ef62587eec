"""VGGish audio features: the reference log-mel front end and the VGGish network.

Front end (as AudioSet's VGGish defines it): 16 kHz mono; STFT with a 25 ms periodic Hann
window and a 10 ms hop (FFT length 512); magnitude; 64 mel bands from 125 to 7500 Hz (HTK mel
scale, triangular filters, DC bin zeroed); log(mel + 0.01); non-overlapping examples of 96
frames (0.96 s) x 64 bands. N seconds of audio give N examples.

Network: the VGG of the ``vggish-10086976.pth`` state dict that torchvggish uses (4 conv
blocks, then 4096-4096-128 fully connected with ReLU); the 128-d output after the last ReLU,
without PCA, one embedding per second.

Padding to T steps (../shared/AVSBENCH.md): S4 / MS3 (v1s, v1m, s4, ms3) repeat the last
example; AVSS-only videos (v2) and folders of videos pad with zeros and mark the padded steps
invalid.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512       # 25 ms, 10 ms, next power of two
MEL_BANDS, MEL_LO, MEL_HI = 64, 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96                     # 0.96 s
REPEAT_LAST_SUBSETS = {"v1s", "v1m", "s4", "ms3"}


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """[N, ...] -> [1 + (N - length) // hop, length, ...] strided windows (none if too short)."""
    n = 1 + (len(x) - length) // hop if len(x) >= length else 0
    if n == 0:
        return np.zeros((0, length) + x.shape[1:], x.dtype)
    return np.stack([x[i * hop:i * hop + length] for i in range(n)])


def _hz_to_mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_matrix(n_bins: int = FFT // 2 + 1) -> np.ndarray:
    """[n_bins, 64] triangular HTK-mel filters from 125 to 7500 Hz; the DC bin gets no weight."""
    bin_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_bins))
    edges = np.linspace(_hz_to_mel(MEL_LO), _hz_to_mel(MEL_HI), MEL_BANDS + 2)
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - lo) / (centre - lo)
    falling = (hi - bin_mel[:, None]) / (hi - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


_MEL = mel_matrix()
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic


def log_mel_examples(wav: np.ndarray) -> np.ndarray:
    """[N] float waveform at 16 kHz -> [E, 96, 64] float32 log-mel examples (E = whole 0.96 s)."""
    wav = np.asarray(wav, np.float64).reshape(-1)
    spec = np.abs(np.fft.rfft(_frames(wav, WINDOW, HOP) * _HANN, FFT))   # [F, 257]
    log_mel = np.log(spec @ _MEL + LOG_OFFSET)                           # [F, 64]
    return _frames(log_mel, EXAMPLE_FRAMES, EXAMPLE_FRAMES).astype(np.float32)


class VGGish(nn.Module):
    """The VGGish network; parameter names match torchvggish's ``vggish-10086976.pth``."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096),
                                        nn.ReLU(True), nn.Linear(4096, 128), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 96, 64] log-mel examples -> [N, 128] embeddings."""
        x = self.features(x)                      # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)      # (h, w, c) order, as the TF weights expect
        return self.embeddings(x)


def load_vggish(weights: str, seed: int = 0, device: str = "cpu") -> tuple[VGGish, str]:
    """VGGish with the state dict at ``weights``, or random weights when it is exactly 'random'."""
    from ssp.io.weights import WeightsError, digest

    model = VGGish()
    if weights == "random":
        torch.manual_seed(seed)
        model = VGGish()
        log.warning("VGGish has RANDOM weights (seed %d), as the config asks: features are not AudioSet features", seed)
        return model.to(device).eval(), f"random(seed={seed})"
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"'vggish.weights': {path} does not exist; put torchvggish's state dict "
                           f"vggish-10086976.pth there (or set 'random' explicitly for a demo)")
    from ssp.io.verify import verify_fetched

    verify_fetched(path, "vggish.weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise WeightsError(f"'vggish.weights': {path} lacks {missing[:4]}...; is it vggish-10086976.pth?")
    if unexpected:
        log.info("VGGish: ignoring %s in %s (PCA parameters are not used)", unexpected, path)
    return model.to(device).eval(), digest(path)


def pad_to_T(emb: np.ndarray, T: int, subset: str) -> tuple[np.ndarray, np.ndarray]:
    """[E, 128] -> ([T, 128], valid [T] bool) by the subset's rule (see module docstring)."""
    out = np.zeros((T, emb.shape[1] if emb.ndim == 2 else 128), np.float32)
    valid = np.zeros(T, bool)
    n = min(len(emb), T)
    out[:n], valid[:n] = emb[:n], True
    if n < T and n > 0 and subset in REPEAT_LAST_SUBSETS:
        out[n:] = emb[n - 1]
        valid[n:] = True
    return out, valid


@torch.inference_mode()
def embed(model: VGGish, examples: np.ndarray, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """[E, 96, 64] -> [E, 128] float32, in batches."""
    out = []
    for k in range(0, len(examples), batch_size):
        x = torch.from_numpy(examples[k:k + batch_size]).unsqueeze(1).to(device)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)
