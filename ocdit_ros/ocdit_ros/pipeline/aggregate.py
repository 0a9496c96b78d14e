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


def ious(masks: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """IoU of each of `masks` (K, H, W) with `other` (H, W) or with each of other (K, H, W)."""
    inter = (masks & other).flatten(1).sum(1)
    union = (masks | other).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter, dtype=torch.float32))


def cluster_members(members: list[Member], object_index: int, threshold: float, min_iou: float,
                    min_area: int, min_support: float) -> list[Proposal]:
    """Greedy IoU clustering of one object's members into proposals, best first.

    Masks are held as one (K, H, W) stack so each step is one tensor op, not one per member."""
    if not members:
        return []
    probs = torch.stack([m.prob for m in members])
    masks = probs > threshold
    valid = torch.stack([m.valid for m in members])
    areas = masks.flatten(1).sum(1)
    mean_fg = (probs * masks).flatten(1).sum(1) / areas.clamp_min(1)
    present = [i for i in range(len(members)) if areas[i].item() >= max(min_area, 1)]
    # Most confident members seed clusters first.
    present.sort(key=lambda i: -float(mean_fg[i]))
    clusters: list[list[int]] = []
    cluster_masks: list[torch.Tensor] = []
    for i in present:
        if cluster_masks:
            scores = ious(torch.stack(cluster_masks), masks[i])
            best = int(scores.argmax())
            if scores[best].item() >= min_iou:
                clusters[best].append(i)
                cluster_masks[best] = _mean_prob(members, clusters[best])[0] > threshold
                continue
        clusters.append([i])
        cluster_masks.append(masks[i])

    proposals = []
    for idx, cmask in zip(clusters, cluster_masks):
        area = cmask.sum().item()
        if area == 0:
            continue
        # Members that saw (most of) this instance are its voters.
        voters = int(((valid & cmask).flatten(1).sum(1) >= 0.5 * area).sum())
        support = len(idx) / max(voters, len(idx))
        prob, var = _mean_prob(members, idx)
        fg = prob[cmask].mean().item()
        agreement = ious(masks[idx], cmask).mean().item()
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
