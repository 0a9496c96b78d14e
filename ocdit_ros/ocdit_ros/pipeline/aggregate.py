"""Turn ensemble members into instance proposals.

One object query can land on different instances of that object in different members (noise
seeds, augmentation views). Averaging them blindly smears instances together, so members'
masks are clustered by IoU per object: every cluster is one instance proposal.

- Members whose mask is smaller than `min_area` vote "absent".
- A member only votes on a cluster if its view covered most of that cluster, so zoomed crops
  do not count against instances outside them.
- confidence = support (agreeing members / members that saw it) x mean foreground probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Member:
    prob: torch.Tensor  # (H, W) foreground probability on the work grid
    valid: torch.Tensor  # (H, W) bool: pixels this member's view covered


@dataclass
class Proposal:
    object_index: int
    prob: torch.Tensor  # (H, W) mean probability of the agreeing members (0 outside their views)
    variance: torch.Tensor  # (H, W) per-pixel variance across the agreeing members
    support: float
    confidence: float
    agreement: float  # mean IoU of the agreeing members' masks with the cluster mask
    members: int

    def mask(self, threshold: float) -> torch.Tensor:
        return self.prob > threshold


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def cluster_members(members: list[Member], object_index: int, threshold: float, min_iou: float,
                    min_area: int, min_support: float) -> list[Proposal]:
    """Greedy IoU clustering of one object's members into proposals, best first."""
    masks = [m.prob > threshold for m in members]
    present = [i for i, mk in enumerate(masks) if mk.sum().item() >= max(min_area, 1)]
    # Most confident members seed clusters first.
    present.sort(key=lambda i: -float(members[i].prob[masks[i]].mean()))
    clusters: list[list[int]] = []
    cluster_masks: list[torch.Tensor] = []
    for i in present:
        scores = [iou(masks[i], cm) for cm in cluster_masks]
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        if best is not None and scores[best] >= min_iou:
            clusters[best].append(i)
            cluster_masks[best] = _mean_prob(members, clusters[best])[0] > threshold
        else:
            clusters.append([i])
            cluster_masks.append(masks[i])

    proposals = []
    for idx, cmask in zip(clusters, cluster_masks):
        area = cmask.sum().item()
        if area == 0:
            continue
        # Members that saw (most of) this instance are its voters.
        voters = [j for j, m in enumerate(members) if (m.valid & cmask).sum().item() >= 0.5 * area]
        support = len(idx) / max(len(voters), len(idx))
        prob, var = _mean_prob(members, idx)
        fg = prob[cmask].mean().item()
        agreement = sum(iou(masks[j], cmask) for j in idx) / len(idx)
        proposals.append(Proposal(object_index, prob, var, support, support * fg, agreement, len(idx)))
    proposals = [p for p in proposals if p.support >= min_support]
    proposals.sort(key=lambda p: -p.confidence)
    return proposals


def _mean_prob(members: list[Member], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return member_mean([members[j] for j in idx])


def member_mean(members: list[Member]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and variance over the members that covered each pixel."""
    probs = torch.stack([m.prob for m in members])
    valid = torch.stack([m.valid for m in members]).float()
    count = valid.sum(0).clamp_min(1)
    mean = (probs * valid).sum(0) / count
    var = ((probs - mean) ** 2 * valid).sum(0) / count
    return mean, var


def resolve_overlaps(probs: list[torch.Tensor], scores: list[float], threshold: float) -> list[torch.Tensor]:
    """Non-overlapping masks: a pixel claimed by several instances goes to the one with the
    highest score x probability there (instances never share pixels in the output)."""
    if not probs:
        return []
    stack = torch.stack(probs)
    weighted = stack * torch.tensor(scores, dtype=stack.dtype)[:, None, None]
    owner = weighted.argmax(0)
    return [(stack[i] > threshold) & (owner == i) for i in range(len(probs))]
