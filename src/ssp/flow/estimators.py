"""Optical flow backends with one contract.

``estimator.pairs(first, second)`` takes two [N, H, W, 3] uint8 arrays and returns the forward
flow [N, H, W, 2] float32 in pixels (dx, dy) from each first frame to its second frame.

Backends:
  * ``perceiver``: transformers' ``PerceiverForOpticalFlow`` (the model SSP uses) loaded from a
    local folder, run by the published recipe: frames scaled to [-1, 1], 3x3 patches of both
    frames (27 channels), fixed tiles of the model's ``train_size`` (368x496) with at least
    ``min_overlap`` pixels of overlap blended with tent weights, frames smaller than a tile
    upsampled first (and the flow scaled back), output times the flow scale factor (20).
  * ``dis``: OpenCV's DIS optical flow (CPU, demo default).
  * ``farneback``: OpenCV's Farneback flow.
"""
from __future__ import annotations

import itertools
import logging
import math

import cv2
import numpy as np

from ssp.io.devices import pick_device
from ssp.io.weights import check_model_folder, digest, load_complete

log = logging.getLogger(__name__)

FLOW_SCALE_FACTOR = 20.0  # the published recipe multiplies the model's output by 20
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


# --------------------------------------------------------------------------- OpenCV backends

def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


class DISFlow:
    name = "dis"

    def __init__(self, preset: str = "medium"):
        self.preset = preset
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def params(self) -> dict:
        return {"backend": self.name, "preset": self.preset}

    def pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.stack([self.dis.calc(_gray(a), _gray(b), None) for a, b in zip(first, second)])


class FarnebackFlow:
    name = "farneback"
    ARGS = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)

    def params(self) -> dict:
        return {"backend": self.name, **self.ARGS}

    def pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.stack([cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None, **self.ARGS)
                         for a, b in zip(first, second)])


# --------------------------------------------------------------------------- Perceiver IO

def image_patches(frames):
    """[B, 3, H, W] in [-1, 1] -> [B, 27, H, W]: the 3x3 neighbourhood of every pixel.

    Zero padding at the border ('SAME'); channel order (row, column, colour) as TF's
    extract_patches, which the released weights were trained with.
    """
    import torch.nn.functional as F

    b, c, h, w = frames.shape
    cols = F.unfold(frames, kernel_size=3, padding=1)            # [B, c*9, H*W], order (c, kh, kw)
    return cols.view(b, c, 9, h, w).transpose(1, 2).reshape(b, 9 * c, h, w)


def grid_origins(shape: tuple[int, int], tile: tuple[int, int], min_overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of tiles covering ``shape`` with >= ``min_overlap`` px overlap, last flush."""
    (h, w), (th, tw) = shape, tile
    if h < th or w < tw:
        raise ValueError(f"image {shape} is smaller than the tile {tile}; upsample it first")
    if min_overlap >= min(th, tw):
        raise ValueError(f"min_overlap {min_overlap} must be smaller than the tile {tile}")
    # every start clipped so the tile stays inside; the largest start is then flush with the edge
    ys = sorted({min(y, h - th) for y in range(0, h, th - min_overlap)})
    xs = sorted({min(x, w - tw) for x in range(0, w, tw - min_overlap)})
    return list(itertools.product(ys, xs))


def tent_weights(tile: tuple[int, int]) -> np.ndarray:
    """[th, tw] blending weights: 1 at the tile border, rising linearly towards the centre."""
    th, tw = tile
    wy = np.minimum(np.arange(th) + 1, th - np.arange(th))
    wx = np.minimum(np.arange(tw) + 1, tw - np.arange(tw))
    return np.minimum(wy[:, None], wx[None, :]).astype(np.float32)


def upsample_size(shape: tuple[int, int], tile: tuple[int, int]) -> tuple[int, int]:
    """Smallest size of the frame's aspect that covers a tile in both directions (or the frame itself)."""
    (h, w), (th, tw) = shape, tile
    s = max(th / h, tw / w, 1.0)
    return max(th, math.ceil(h * s)), max(tw, math.ceil(w * s))


def resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[N, h, w, 2] flow at another resolution -> [N, H, W, 2], vectors rescaled to the new pixels."""
    n, h, w, _ = flow.shape
    H, W = shape
    if (h, w) == (H, W):
        return flow
    out = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_LINEAR) for f in flow])
    out[..., 0] *= W / w
    out[..., 1] *= H / h
    return out


def _sdpa_forward(self, hidden_states, attention_mask=None, inputs=None, inputs_mask=None,
                  output_attentions=False):
    """PerceiverSelfAttention.forward with the attention core in ``attend``.

    Same weights and the same arithmetic as the Hugging Face forward (layer norms, projections,
    1/sqrt(d) scaling, additive mask).
    """
    hidden_states = self.layernorm1(hidden_states)
    inputs = self.layernorm2(inputs)
    kv = inputs if inputs is not None else hidden_states
    mask = inputs_mask if inputs is not None else attention_mask
    b = hidden_states.shape[0]
    q = self.query(hidden_states).view(b, -1, self.num_heads, self.qk_channels_per_head).transpose(1, 2)
    k = self.key(kv).view(b, -1, self.num_heads, self.qk_channels_per_head).transpose(1, 2)
    v = self.value(kv).view(b, -1, self.num_heads, self.v_channels_per_head).transpose(1, 2)
    out = attend(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]), mask=mask,
                 dropout=self.dropout.p if self.training else 0.0)
    return (out.transpose(1, 2).reshape(b, -1, self.num_heads * self.v_channels_per_head),)


def attend(q, k, v, *, scale: float, mask=None, dropout: float = 0.0):
    """softmax(q k^T * scale + mask) v for [B, H, L, d] tensors.

    On a GPU, head sizes beyond flash attention's run through ``blockwise_attention`` (GEMMs over
    blocks of scores); the rest, and every attention on a CPU, through SDPA's fused kernels,
    which never materialize the scores. SDPA's fused kernels need head sizes that are multiples
    of 8, and so do GPU matrix products for their fast (16-byte aligned) kernels; the flow model
    has 322 (its input channels). Zero columns change no dot product and no output column, so
    they are padded, with the scale passed as given.
    """
    import torch.nn.functional as F

    d, dv = q.shape[-1], v.shape[-1]
    if d % 8:
        q, k = F.pad(q, (0, -d % 8)), F.pad(k, (0, -d % 8))
    if dv % 8:
        v = F.pad(v, (0, -dv % 8))
    if q.device.type in BLOCKWISE_DEVICES and mask is None and max(d, dv) > FLASH_MAX_HEAD_DIM and dropout == 0.0:
        out = blockwise_attention(q, k, v, scale=scale, block=BLOCK_SCORES)
    else:
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, dropout_p=dropout)
    return out[..., :dv]


def _folded_cross_attention(self, hidden_states, attention_mask=None, inputs=None, inputs_mask=None,
                            output_attentions=False):
    """PerceiverAttention.forward of a one-head cross-attention, its projections folded into the
    short side: the same function of the same weights, in fewer operations.

    With normalized queries h and inputs x, HF computes softmax((hWq'+bq)(xWk'+bk)' s)(xWv'+bv)Wo'+bo.
    * Long inputs (the encoder: 182,528 pixels, 2,048 latents): q = (hWq'+bq)Wk s; the q.bk term
      is the same for every key of a query, which softmax ignores. Keys and values are then x
      itself, and Wo Wv (+ Wo bv + bo, since attention weights sum to 1) applies after: no key or
      value projection of the pixels is made.
    * Long queries (the decoder: 182,528 pixel queries of 322 channels against 2,048 latents of
      512): keys k = [(xWk'+bk)Wq, (xWk'+bk)bq] s, so the queries are [h, 1] (323 channels
      instead of 512), and values (xWv'+bv)Wo' (322 instead of 512): no query or output
      projection of the pixels is made, and the two big products shrink by a third.
    The folded matrices are made in float32 from the weights at every call (small products).
    """
    import torch
    import torch.nn.functional as F

    sa, dense = self.self, self.output.dense
    if inputs is None or inputs_mask is not None or sa.num_heads != 1 or self.training:
        return self._unfolded_forward(hidden_states, attention_mask, inputs, inputs_mask, output_attentions)
    h, x = sa.layernorm1(hidden_states), sa.layernorm2(inputs)
    device = h.device.type
    dt = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    scale = 1.0 / math.sqrt(sa.qk_channels_per_head)
    with torch.autocast(device, enabled=False):
        if x.shape[1] >= h.shape[1]:
            q = (F.linear(h.float(), sa.query.weight.float(), sa.query.bias.float()) @ sa.key.weight.float()) * scale
            w = dense.weight.float() @ sa.value.weight.float()
            b = dense.weight.float() @ sa.value.bias.float() + dense.bias.float()
            xs = _aligned(x, dt)[:, None]
            a = attend(_aligned(q, dt)[:, None], xs, xs, scale=1.0)[:, 0, :, :x.shape[-1]]
            out = F.linear(a, w.to(dt), b.to(dt))
        else:
            k = F.linear(x.float(), sa.key.weight.float(), sa.key.bias.float())
            v = F.linear(x.float(), sa.value.weight.float(), sa.value.bias.float())
            keys = torch.cat([k @ sa.query.weight.float(), (k @ sa.query.bias.float())[..., None]], -1) * scale
            values = F.linear(v, dense.weight.float())
            queries = _aligned(h, dt, ones=True)
            out = attend(queries[:, None], _aligned(keys, dt)[:, None], values.to(dt)[:, None], scale=1.0)[:, 0]
            out = out + dense.bias.to(dt)
    if self.use_query_residual:
        out = out + hidden_states
    return (out,)


def _aligned(x, dtype, *, ones: bool = False):
    """``x`` in ``dtype``, after a column of ones with ``ones``, its channels padded with zeros to
    a multiple of 8: one copy of the pixels' tensors, which ``attend`` then need not pad again."""
    c = x.shape[-1]
    width = c + ones
    out = x.new_empty(x.shape[:-1] + (width + -width % 8,), dtype=dtype)
    out[..., :c] = x
    out[..., c:] = 0
    if ones:
        out[..., c] = 1
    return out


FLASH_MAX_HEAD_DIM = 256          # flash attention's limit; Perceiver IO's flow model has 322 and 512
BLOCK_SCORES = 1 << 29            # score elements per block of blockwise_attention (1 GiB in bf16)
BLOCKWISE_DEVICES = ("cuda",)     # CPUs keep SDPA's fused kernel, which takes any head size


def blockwise_attention(q, k, v, *, scale: float, block: int = BLOCK_SCORES):
    """softmax(q k^T * scale) v for [B, H, Lq, d], [B, H, Lk, d], [B, H, Lk, dv], as plain matrix
    products over blocks of (batch x head, queries) whose score matrix has at most ``block``
    elements.

    The flow model's two big attentions have head sizes (322 in the encoder's cross-attention, 512
    in the decoder's) beyond flash attention's 256, where SDPA falls back to its memory-efficient
    kernel, which is slow at such sizes (about 60 TFLOP/s in bf16 on an H100). Here the products
    run as cuBLAS GEMMs in the input dtype and the softmax as one kernel per block (it accumulates
    in fp32 and writes the input dtype); a block's scores are the only large temporary. Same
    arithmetic as the Hugging Face forward: in fp32 the two agree to rounding.
    """
    import torch

    B, H, Lq, d = q.shape
    Lk, dv = k.shape[-2], v.shape[-1]
    q, k, v = q.reshape(B * H, Lq, d), k.reshape(B * H, Lk, d), v.reshape(B * H, Lk, dv)
    out = q.new_empty(B * H, Lq, dv)
    groups = max(1, block // (Lq * Lk))              # whole (batch x head) slices per block ...
    rows = Lq if groups > 1 else max(1, block // Lk)  # ... or query rows of one slice
    with torch.autocast(q.device.type, enabled=False):
        for g in range(0, B * H, groups):
            kt, vg = k[g:g + groups].transpose(1, 2), v[g:g + groups]
            for r in range(0, Lq, rows):
                scores = torch.baddbmm(q.new_empty(()), q[g:g + groups, r:r + rows], kt, beta=0.0, alpha=scale)
                out[g:g + groups, r:r + rows] = torch.bmm(torch.softmax(scores, dim=-1), vg)
                del scores
    return out.view(B, H, Lq, dv)


def use_sdpa_attention(model, *, fold: bool = False) -> int:
    """Route every Perceiver attention of ``model`` through ``attend``, and with ``fold`` its
    one-head cross-attentions through ``_folded_cross_attention``; returns how many attentions
    were switched."""
    import types

    from torch import nn
    from transformers.models.perceiver.modeling_perceiver import PerceiverAttention, PerceiverSelfAttention

    n = 0
    for module in model.modules():
        if isinstance(module, PerceiverSelfAttention):
            module.forward = types.MethodType(_sdpa_forward, module)
            n += 1
        elif fold and isinstance(module, PerceiverAttention) and isinstance(module.self.layernorm2, nn.LayerNorm):
            module._unfolded_forward = module.forward
            module.forward = types.MethodType(_folded_cross_attention, module)
    return n


class PerceiverFlow:
    """Perceiver IO optical flow, tiled and batched across pairs and tiles."""

    name = "perceiver"

    def __init__(self, weights: str | None, *, batch_size: int = 8, dtype: str = "auto",
                 device: str = "auto", min_overlap: int = 20, attention: str = "folded", model=None):
        import torch

        if model is None:
            from transformers import PerceiverForOpticalFlow

            folder = check_model_folder(weights, "flow.perceiver.weights")
            model = load_complete(PerceiverForOpticalFlow, folder, "flow.perceiver.weights")
            self.digest = digest(folder)
        else:
            self.digest = "in-memory"
        self.device = pick_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.model = model.to(self.device).eval()
        self.attention = attention
        if attention in ("sdpa", "folded"):
            use_sdpa_attention(self.model, fold=attention == "folded")
        elif attention != "eager":
            raise ValueError(f"unknown attention {attention!r} (folded | sdpa | eager)")
        self.tile = tuple(int(x) for x in model.config.train_size)
        self.batch_size, self.min_overlap, self.dtype_name = batch_size, min_overlap, dtype
        log.info("Perceiver IO flow on %s (%s), tile %s, weights %s", self.device, dtype, self.tile, self.digest)

    def params(self) -> dict:
        return {"backend": self.name, "tile": list(self.tile), "min_overlap": self.min_overlap,
                "dtype": self.dtype_name, "attention": self.attention, "weights_sha256": self.digest, "scale": FLOW_SCALE_FACTOR}

    def _inputs(self, first: np.ndarray, second: np.ndarray):
        """[N, H, W, 3] uint8 pairs -> [N, 2, 27, H, W] float tensors on the device."""
        import torch

        x = torch.from_numpy(np.stack([first, second], 1)).to(self.device)   # [N, 2, H, W, 3]
        x = x.permute(0, 1, 4, 2, 3).float() / 255.0 * 2.0 - 1.0            # [N, 2, 3, H, W]
        n, _, c, h, w = x.shape
        return image_patches(x.reshape(n * 2, c, h, w)).view(n, 2, 9 * c, h, w)

    def pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Tiles of all pairs go through the model ``batch_size`` at a time; the tent-weighted
        blending happens on the device, and the flow crosses to the host once."""
        import torch

        n, h, w, _ = first.shape
        H, W = upsample_size((h, w), self.tile)
        if (H, W) != (h, w):
            first = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_LINEAR) for f in first])
            second = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_LINEAR) for f in second])
        th, tw = self.tile
        origins = grid_origins((H, W), self.tile, self.min_overlap)
        per_group = max(1, self.batch_size // len(origins))     # pairs whose 27-channel patches are made at once
        with torch.inference_mode():
            weights = torch.from_numpy(tent_weights(self.tile)).to(self.device)[..., None]   # [th, tw, 1]
            total = torch.zeros((n, H, W, 2), dtype=torch.float32, device=self.device)
            norm = torch.zeros((n, H, W, 1), dtype=torch.float32, device=self.device)
            for p0 in range(0, n, per_group):
                inputs = self._inputs(first[p0:p0 + per_group], second[p0:p0 + per_group])
                jobs = [(p0 + i, y, x) for i in range(inputs.shape[0]) for (y, x) in origins]
                for k in range(0, len(jobs), self.batch_size):
                    chunk = jobs[k:k + self.batch_size]
                    batch = torch.stack([inputs[i - p0, :, :, y:y + th, x:x + tw] for i, y, x in chunk])
                    with torch.autocast(self.device.split(":")[0], dtype=self.dtype,
                                        enabled=self.dtype != torch.float32):
                        out = self.model(inputs=batch).logits.float() * FLOW_SCALE_FACTOR  # [b, th, tw, 2]
                    for (i, y, x), flow in zip(chunk, out):
                        total[i, y:y + th, x:x + tw] += flow * weights
                        norm[i, y:y + th, x:x + tw] += weights
            flow = (total / norm).cpu().numpy()
        return resize_flow(flow, (h, w))


def make_estimator(flow_cfg) -> DISFlow | FarnebackFlow | PerceiverFlow:
    """The backend named by the config's ``flow`` section."""
    if flow_cfg.backend == "dis":
        return DISFlow(flow_cfg.dis_preset)
    if flow_cfg.backend == "farneback":
        return FarnebackFlow()
    p = flow_cfg.perceiver
    return PerceiverFlow(p.weights, batch_size=p.batch_size, dtype=p.dtype, device=p.device,
                         min_overlap=p.min_overlap, attention=p.attention)


def video_pairs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, H, W, 3] -> the T-1 (frame t, frame t+1) pairs."""
    return frames[:-1], frames[1:]
