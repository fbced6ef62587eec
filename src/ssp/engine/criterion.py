"""Mask2Former's loss for many videos and every decoder layer at once.

The same loss as transformers' ``Mask2FormerLoss`` (through ``get_loss_dict``), term for term:
Hungarian matching of queries to ground-truth masks on ``num_points`` random points (cost:
class ``matcher_class_cost`` (1, as AAVS's) x -p(class), mask 5 x pairwise BCE, dice 5 x
pairwise dice), then on the matched pairs the
point-sampled BCE and dice (points chosen by uncertainty: 3x oversampling, 75 % most uncertain,
the rest random), each summed over masks and divided by the video's number of masks, and the
class cross-entropy with no-object weight, for the final prediction and each auxiliary one.

The Hugging Face loss runs one video at a time, and inside it one frame and one decoder layer at
a time: for the paper's network and 8 videos of 5 frames that is 400 matchings, each a dozen
small kernels and a copy to the host, and it took 705 of the 1,191 ms of a training step on an
H100. Here every (layer, frame) pair is matched from one batch of cost matrices with one copy to
the host, and the losses of all videos and layers are computed together.

Random points are drawn per video, in the order the Hugging Face loss draws them, from a
generator seeded with the video's seed: on a CPU the points, and so the loss, are the Hugging
Face loss's (a test checks it; on a GPU the draws are grouped differently, so the points differ
but follow the same distribution), and on any device a video's loss does not depend on which
other videos share its batch or process.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F


def sample_points(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] at [B, P, 2] points in [0, 1]^2 (x, y) -> [B, C, P], bilinear, as Mask2Former."""
    return F.grid_sample(features, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def targets(labels: torch.Tensor, binary: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """[N, H, W] labels -> padded masks [N, K, H, W] float, classes [N, K] long, and K per frame.

    One mask per class present, in increasing class order (background 0 included, as the semantic
    argmax includes it); binary tasks have AAVS's two classes, background 0 and sounding 1, as the
    Mask2Former image processor makes them from AAVS's {0, 1} masks (no label reduction).
    """
    if binary:
        labels = (labels > 0).long()
    present = torch.zeros((len(labels), 2 if binary else 71), dtype=torch.bool, device=labels.device)
    present.scatter_(1, labels.flatten(1).long(), True)                    # [N, 71]: classes present
    rows = [torch.nonzero(p).squeeze(1) for p in present.cpu()]
    k = max(1, max(len(r) for r in rows))
    classes = torch.zeros((len(labels), k), dtype=torch.long)
    for i, r in enumerate(rows):
        classes[i, :len(r)] = r
    classes = classes.to(labels.device)
    masks = (labels.unsqueeze(1) == classes[:, :, None, None]).float()
    return masks, classes, [len(r) for r in rows]


def mask_targets(labels: torch.Tensor, binary: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``targets`` per frame, unpadded: masks [K, H, W] float and classes [K] long (the form the
    Hugging Face loss takes)."""
    masks, classes, counts = targets(labels, binary)
    return [m[:k] for m, k in zip(masks, counts)], [c[:k] for c, k in zip(classes, counts)]


class VideoBatchLoss:
    """Weighted Mask2Former loss terms per video, for the videos of a batch (``__call__``)."""

    def __init__(self, m2f):
        crit = m2f.criterion
        self.num_points = crit.num_points
        self.oversample = crit.oversample_ratio
        self.importance = crit.importance_sample_ratio
        self.empty_weight = crit.empty_weight
        self.num_labels = crit.num_labels
        m = crit.matcher
        self.cost = (float(m.cost_class), float(m.cost_mask), float(m.cost_dice))
        w = m2f.weight_dict
        self.weight = (w["loss_cross_entropy"], w["loss_mask"], w["loss_dice"])

    def __call__(self, class_logits: list[torch.Tensor], mask_logits: list[torch.Tensor], labels: torch.Tensor,
                 video_of_frame: list[int], seeds: list[int | None], binary: bool) -> list[dict[str, torch.Tensor]]:
        """``class_logits`` / ``mask_logits``: per decoder layer [N, Q, C+1] / [N, Q, h, w] for the N
        frames with ground truth, the final layer last; ``labels`` [N, H, W]; ``video_of_frame``:
        the video (0..V-1) of each frame, frames of a video consecutive; ``seeds``: per video.
        Returns per video {"class", "mask", "dice"}, summed over layers, weighted."""
        dev = mask_logits[-1].device
        layers = [len(mask_logits) - 1] + list(range(len(mask_logits) - 1))   # HF's order: final, then aux
        L, (N, Q) = len(layers), mask_logits[-1].shape[:2]
        V = len(seeds)
        vid = torch.as_tensor(video_of_frame)
        frames_of = [torch.nonzero(vid == v).squeeze(1).tolist() for v in range(V)]
        tmasks, tclasses, counts = targets(labels, binary)
        n_masks = [sum(counts[f] for f in fr) for fr in frames_of]             # normalizes the mask terms
        n_pairs = [sum(min(Q, counts[f]) for f in fr) for fr in frames_of]     # matches per layer
        P = self.num_points
        n_sampled, n_uncertain = int(P * self.oversample), int(self.importance * P)

        # random points, per video and layer in the order the Hugging Face loss draws them
        match_pts = torch.empty((L, N, P, 2), device=dev)
        unc_pts, rnd_pts = [[None] * V for _ in range(L)], [[None] * V for _ in range(L)]
        for v in range(V):
            gen = None
            if seeds[v] is not None:
                gen = torch.Generator(device=dev)
                gen.manual_seed(seeds[v])
            for li in range(L):   # one draw for the video's frames: the same numbers as one per frame (CPU)
                match_pts[li, frames_of[v]] = torch.rand((len(frames_of[v]), P, 2), generator=gen, device=dev)
                unc_pts[li][v] = torch.rand((n_pairs[v], n_sampled, 2), generator=gen, device=dev)
                if P - n_uncertain > 0:
                    rnd_pts[li][v] = torch.rand((n_pairs[v], P - n_uncertain, 2), generator=gen, device=dev)

        cls = torch.stack([class_logits[i] for i in layers])                  # [L, N, Q, C+1]
        msk = torch.stack([mask_logits[i] for i in layers])                   # [L, N, Q, h, w]
        indices = self._match(cls, msk, tmasks, tclasses, counts, match_pts)  # (layer, frame) -> (src, tgt)

        # matched pairs, per video and layer, in the Hugging Face order (frames, then matches)
        li_, f_, s_, t_, g_, groups = [], [], [], [], [], []
        for v in range(V):
            for li in range(L):
                for f in frames_of[v]:
                    src, tgt = indices[li][f]
                    g_ += [len(groups)] * len(src)          # the (video, layer) group of each pair
                    li_ += [li] * len(src)
                    f_ += [f] * len(src)
                    s_ += src.tolist()
                    t_ += tgt.tolist()
                groups.append((v, li))
        idx = [torch.as_tensor(x, dtype=torch.long, device=dev) for x in (li_, f_, s_, t_, g_)]
        pred = msk[idx[0], idx[1], idx[2]].unsqueeze(1)                       # [M, 1, h, w]
        tgt = tmasks[idx[1], idx[3]].unsqueeze(1).to(pred.dtype)             # [M, 1, H, W]
        unc = torch.cat([unc_pts[li][v] for v, li in groups])                # same order as the pairs
        with torch.no_grad():
            certainty = -sample_points(pred, unc).abs()[:, 0]                 # [M, n_sampled]
            top = torch.topk(certainty, k=n_uncertain, dim=1)[1]
            pts = torch.gather(unc, 1, top.unsqueeze(-1).expand(-1, -1, 2))
            if P - n_uncertain > 0:
                pts = torch.cat([pts, torch.cat([rnd_pts[li][v] for v, li in groups])], dim=1)
            point_labels = sample_points(tgt, pts)[:, 0]
        point_logits = sample_points(pred, pts)[:, 0]                         # [M, P]
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        prob = point_logits.sigmoid()
        dice = 1 - (2 * (prob * point_labels).sum(-1) + 1) / (prob.sum(-1) + point_labels.sum(-1) + 1)
        norm = torch.tensor([max(n_masks[v], 1) for v, _ in groups], dtype=bce.dtype, device=dev)
        mask_loss = torch.zeros(len(groups), dtype=bce.dtype, device=dev).index_add(0, idx[4], bce) / norm
        dice_loss = torch.zeros(len(groups), dtype=dice.dtype, device=dev).index_add(0, idx[4], dice) / norm

        # class cross-entropy: no-object everywhere but at the matched queries
        target_classes = torch.full((L, N, Q), self.num_labels, dtype=torch.long, device=dev)
        target_classes[idx[0], idx[1], idx[2]] = tclasses[idx[1], idx[3]]
        weights = self.empty_weight.to(cls.dtype)
        ce = F.cross_entropy(cls.flatten(0, 2), target_classes.flatten(), weight=weights, reduction="none")
        w = weights[target_classes.flatten()]
        frame_video = vid.to(dev)
        group_of_entry = (frame_video[None, :, None] * L + torch.arange(L, device=dev)[:, None, None]).expand(L, N, Q)
        num = torch.zeros(V * L, dtype=ce.dtype, device=dev).index_add(0, group_of_entry.flatten(), ce)
        den = torch.zeros(V * L, dtype=w.dtype, device=dev).index_add(0, group_of_entry.flatten(), w)
        class_loss = num / den                                               # group v * L + li

        wc, wm, wd = self.weight
        out = []
        for v in range(V):
            g = slice(v * L, (v + 1) * L)   # groups are ordered video-major, like class_loss
            out.append({"class": wc * class_loss[g].sum(), "mask": wm * mask_loss[g].sum(),
                        "dice": wd * dice_loss[g].sum()})
        return out

    def _match(self, cls, msk, tmasks, tclasses, counts, pts) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Hungarian matching of every (layer, frame): one batch of costs, one copy to the host."""
        L, N, Q = cls.shape[:3]
        K = tmasks.shape[1]
        with torch.no_grad():
            prob = cls.softmax(-1)                                           # [L, N, Q, C+1]
            cost_class = -torch.gather(prob, 3, tclasses[None, :, None, :].expand(L, N, Q, K))
            x = sample_points(msk.flatten(0, 1), pts.flatten(0, 1))          # [L*N, Q, P]
            # the targets at each layer's points: one sampling with the layers' points side by side
            t = sample_points(tmasks.to(x.dtype), pts.permute(1, 0, 2, 3).flatten(1, 2))   # [N, K, L*P]
            t = t.view(N, K, L, -1).permute(2, 0, 1, 3).flatten(0, 1)        # [L*N, K, P]
            P = x.shape[-1]
            # Hugging Face's pairwise BCE, mean_p[BCE(x, 1) t + BCE(x, 0) (1 - t)], in one pass over
            # the logits: BCE(x, 1) = softplus(-x) and BCE(x, 0) = softplus(-x) + x, so it is
            # mean_p softplus(-x) + mean_p x (1 - t)
            cost_mask = F.softplus(-x).mean(-1, keepdim=True) + torch.bmm(x, (1 - t).transpose(1, 2)) / P
            s = x.sigmoid()
            cost_dice = 1 - (2 * torch.bmm(s, t.transpose(1, 2)) + 1) / (s.sum(-1)[:, :, None] + t.sum(-1)[:, None, :] + 1)
            wc, wm, wd = self.cost
            cost = wm * cost_mask + wc * cost_class.flatten(0, 1) + wd * cost_dice
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big).float().cpu().numpy()
        out = []
        for li in range(L):
            row = []
            for f in range(N):
                row.append(linear_sum_assignment(cost[li * N + f, :, :counts[f]]))
            out.append(row)
        return out
