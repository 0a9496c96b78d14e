"""Pretrain the ViT alone by patch-level template matching (issue 11: "a backbone that generalises").

The paper's backbone is a frozen DINOv2; none exists here, and a ViT trained jointly with the
diffuser learns its training objects rather than how to compare templates with an image. This
objective asks for exactly the comparison: on generated scenes, where every image patch's object
is known, each labelled patch must be closer (cosine) to the prototype of its own object - the
mean feature of that object's template foreground patches - than to any other object's prototype
in the batch (InfoNCE). It is what `benchmarks/patch_matching.py` measures on val.

Samples reuse the coarse stage's data code (`SampleSource`: crops, recolouring shared by an
object's pixels and its templates, colour jitter), so a recoloured object is a new identity here
too. The result is a whole model file (random VAE and diffuser) whose backbone later stages can
start from and keep frozen (`backbone.trainable: false`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..model import OCDiT, load_config
from ..model.weights import save_weights
from .config import TrainConfig
from .trainer import lr_factor
from .samples import SampleSource, crop_resize, load_template_bank

TEMPLATE_FG = 10  # uint8: templates are rendered on black; recolouring keeps black black


@dataclass
class PretrainConfig:
    data: list[str] = field(default_factory=list)  # BOP split folders of training scenes
    templates: str = ""  # template archives of their objects
    out: str = "runs/backbone"
    model: str = "small16"  # preset or YAML: the ViT to train (the rest of the model stays random)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.1
    templates_per_object: int = 4
    crop_scale: tuple[float, float] = (0.45, 1.0)
    recolour_prob: float = 0.8
    colour_jitter: float = 0.2
    seed: int = 0
    log_every: int = 50

    def validate(self) -> "PretrainConfig":
        if not self.data or not self.templates:
            raise ValueError("backbone pretraining needs --data (BOP split folders) and --templates (archives)")
        if self.steps < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ValueError("steps and batch_size must be >= 1 and temperature > 0")
        return self


def patch_labels(masks: list[np.ndarray], owners: list[int], patch: int) -> torch.Tensor:
    """(h, w) long: the owner index of the mask covering more than half a patch, else -1."""
    h, w = masks[0].shape if masks else (patch, patch)
    labels = torch.full((h // patch, w // patch), -1, dtype=torch.long)
    for m, o in zip(masks, owners):
        cover = F.avg_pool2d(torch.from_numpy(m).float()[None, None], patch)[0, 0]
        labels[cover > 0.5] = o
    return labels


def draw_sample(src: SampleSource, rng: np.random.Generator, patch: int) -> dict:
    """One crop: image (3, H, W), per-patch labels indexing `obj_ids`, templates (N, T, 3, S, S)."""
    im, rgb, full, colours, box = src.random_scene_crop(rng)  # the coarse stage's crops and recolouring
    masks = [crop_resize(m, box, src.image_size, Image.BILINEAR) > 127 for m in full]  # at image size: per patch
    obj_ids = sorted({i.obj_id for i in im.instances})
    labels = patch_labels(masks, [obj_ids.index(i.obj_id) for i in im.instances], patch)
    image = src._crop_image(rgb, box, rng)
    return {"image": image, "labels": labels, "obj_ids": obj_ids, "templates": src._templates(obj_ids, rng, colours)}


def prototypes(vit, templates: torch.Tensor, patch: int) -> torch.Tensor:
    """templates (N, T, 3, S, S) in [0, 1] -> (N, C) unit mean feature over foreground patches."""
    n, t = templates.shape[:2]
    flat = templates.flatten(0, 1)
    feats = vit.patch_tokens(OCDiT.normalize(flat))  # (N*T, P, C)
    fg = F.avg_pool2d((flat.amax(1, keepdim=True) > TEMPLATE_FG / 255).float(), patch).flatten(1) > 0.5  # (N*T, P)
    fg = fg.view(n, t, -1, 1).float()
    summed = (feats.view(n, t, -1, feats.shape[-1]) * fg).sum((1, 2))
    return F.normalize(summed / fg.sum((1, 2)).clamp_min(1), dim=-1)


def matching_loss(vit, batch: list[dict], patch: int, temperature: float) -> tuple[torch.Tensor, float]:
    """InfoNCE of labelled image patches against every prototype of the batch; also the top-1 accuracy.

    The same object in another image of the batch is neither positive nor negative (it may carry
    the same colours: a duplicate, not a different object)."""
    images = torch.stack([b["image"] for b in batch])
    feats = F.normalize(vit.patch_tokens(OCDiT.normalize(images)), dim=-1)  # (B, P, C)
    protos = prototypes(vit, torch.cat([b["templates"] for b in batch]), patch)  # (K, C)
    ids = torch.tensor([o for b in batch for o in b["obj_ids"]])
    start = np.cumsum([0] + [len(b["obj_ids"]) for b in batch])
    rows, targets, blocked = [], [], []
    for i, b in enumerate(batch):
        lab = b["labels"].flatten()
        keep = lab >= 0
        if not keep.any():
            continue
        target = lab[keep] + int(start[i])
        rows.append(feats[i][keep])
        targets.append(target)
        own = torch.zeros(len(ids), dtype=torch.bool)
        own[int(start[i]):int(start[i + 1])] = True
        blocked.append((ids[None] == ids[target][:, None]) & ~own[None])  # same object, other image
    if not rows:
        return feats.sum() * 0.0, 0.0
    logits = torch.cat(rows) @ protos.T / temperature
    logits = logits.masked_fill(torch.cat(blocked), float("-inf"))
    target = torch.cat(targets)
    acc = float((logits.argmax(1) == target).float().mean())
    return F.cross_entropy(logits, target), acc


def pretrain(cfg: PretrainConfig, log=print) -> Path:
    """Train the ViT of `cfg.model` by template matching; writes OUT/model.safetensors and OUT/log.jsonl."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model_cfg = load_config(cfg.model)
    model_cfg.backbone.trainable = True
    model = OCDiT.from_config(model_cfg)
    vit, patch = model.feature_extractor.model, model_cfg.backbone.patch_size
    source_cfg = TrainConfig(stage="coarse", data=list(cfg.data), templates=cfg.templates, seed=cfg.seed,
                             templates_per_object=cfg.templates_per_object, crop_scale=tuple(cfg.crop_scale),
                             recolour_prob=cfg.recolour_prob, colour_jitter=cfg.colour_jitter, lr=cfg.lr,
                             steps=cfg.steps, warmup_steps=min(100, cfg.steps // 10))
    src = SampleSource(source_cfg, model_cfg, load_template_bank(cfg.templates))
    params = [p for n, p in vit.named_parameters() if n != "mask_token"]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The diffusion stages' schedule (warm-up, cosine decay), one definition.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, source_cfg))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    vit.train()
    t0, run_loss, run_acc = time.perf_counter(), 0.0, 0.0
    with (out / "log.jsonl").open("w") as logf:
        for step in range(1, cfg.steps + 1):
            rng = np.random.default_rng([cfg.seed, step])
            batch = [draw_sample(src, rng, patch) for _ in range(cfg.batch_size)]
            loss, acc = matching_loss(vit, batch, patch, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            run_loss, run_acc = run_loss + loss.item(), run_acc + acc
            if step % cfg.log_every == 0 or step == cfg.steps:
                k = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                row = {"step": step, "loss": round(run_loss / k, 4), "train_acc": round(run_acc / k, 4),
                       "lr": sched.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 1)}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                log(row)
                run_loss, run_acc = 0.0, 0.0
    vit.eval()
    model.config.backbone.trainable = False  # stages that start from this file keep the ViT frozen
    path = out / "model.safetensors"
    save_weights(model, path)
    return path
