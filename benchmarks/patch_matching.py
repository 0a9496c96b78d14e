"""Which backbone features tell an unseen object's image patches from other objects', given templates?

The feature-level half of the backbone comparison (docs/training.md): for each image of a BOP split,
a centre square crop resized to the model's input size is cut into patches; a patch belongs to an
object when that object's visible mask covers more than half of it. Each object present gets a
prototype, the mean feature over the foreground patches of `--views` of its templates. A patch is
right when the most similar prototype (cosine) among the objects present in the crop is its own.
Chance is 1 / (objects present). Options compared:

- `colour`: the fixed colour descriptor (model/descriptor.py), no learning;
- `vit`: the ViT part of a model's backbone (`--weights`; random initialisation without);
- `vit+colour`: both, each L2-normalised, concatenated (what the small16 diffuser sees).

`prior_iou`: the template-match prior alone (model/template_prior.py, no learning), per present
object: IoU between its patches (as above) and the patches whose best-match score exceeds 0.6.

    .venv/bin/python benchmarks/patch_matching.py --dataset DATA --split val --templates T48 \
        [--weights runs/coarse/model.safetensors] [--max-images 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ocdit_ros"))

from ocdit_ros.data.bop import open_split  # noqa: E402
from ocdit_ros.model import OCDiT, load_model, small16  # noqa: E402
from ocdit_ros.model.descriptor import descriptor_dim, patch_descriptor, template_patch_foreground  # noqa: E402
from ocdit_ros.model.template_prior import TemplatePrior  # noqa: E402
from ocdit_ros.naming import obj_name  # noqa: E402
from ocdit_ros.templates.archive import load_archive  # noqa: E402
from ocdit_ros.training.examples import patch_labels  # noqa: E402


def features(model: OCDiT, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """rgb (B, 3, H, W) in [0, 1] -> per option (B, C, h, w), each L2-normalised over C."""
    p = model.config.backbone.patch_size
    vit = model.feature_extractor(model.normalize(rgb))[:, : model.config.backbone.embed_dim]
    colour = patch_descriptor(rgb, p, "colour_hist")
    vit, colour = F.normalize(vit, dim=1), F.normalize(colour, dim=1)
    return {"colour": colour, "vit": vit, "vit+colour": F.normalize(torch.cat([vit, colour], 1), dim=1)}


@torch.no_grad()
def run(args) -> dict:
    model = load_model(args.weights) if args.weights else OCDiT.from_config(small16())
    model.eval()
    size, p = model.config.image_size[0], model.config.backbone.patch_size
    tsize = model.config.template_pixels[0]
    split = open_split(args.dataset, args.split, targets=None)
    right = {k: 0 for k in ("colour", "vit", "vit+colour")}
    total, chance, prior_iou = 0, [], []
    protos: dict[int, dict[str, torch.Tensor]] = {}
    template_desc: dict[int, torch.Tensor] = {}  # (V, 70, h, w) per object
    dim = descriptor_dim("colour_hist")
    prior = TemplatePrior(dim, dim, 1)
    for im in split.images[: args.max_images]:
        rgb = np.asarray(Image.open(im.rgb_path).convert("RGB"))
        h, w = rgb.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(rgb[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float()[None] / 255
        masks, owners = [], [inst.obj_id for inst in im.instances]
        for inst in im.instances:
            m = np.asarray(Image.open(inst.mask_visib_path).convert("L"))[y0:y0 + side, x0:x0 + side] > 127
            masks.append(np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)))
        labels = patch_labels(masks, owners, p)  # the training stage's labels (a later mask wins a patch)
        present = sorted({o for m, o in zip(masks, owners) if (patch_labels([m], [o], p) >= 0).any()})
        if len(present) < 2:
            continue
        for oid in present:
            if oid not in protos:
                arc = load_archive(Path(args.templates) / f"{obj_name(oid)}.npz")
                pick = np.linspace(0, len(arc.rgb) - 1, args.views).round().astype(int)
                t = torch.from_numpy(arc.rgb[pick]).permute(0, 3, 1, 2).float() / 255
                if t.shape[-1] != tsize:
                    t = F.interpolate(t, size=(tsize, tsize), mode="bilinear", antialias=True, align_corners=False)
                fg = template_patch_foreground(t, p)  # (V, h, w): the template prior's and training's rule
                protos[oid] = {k: F.normalize(f.permute(0, 2, 3, 1)[fg].mean(0), dim=0)
                               for k, f in features(model, t).items()}
                template_desc[oid] = patch_descriptor(t, p, "colour_hist")
        maps = prior.maps(patch_descriptor(x, p, "colour_hist"),
                          torch.stack([template_desc[o] for o in present])[None])[0, :, :, 0]  # (O, P)
        for j, oid in enumerate(present):
            own, hit = labels.flatten() == oid, maps[j] > 0.6
            prior_iou.append(float((own & hit).sum() / max(int((own | hit).sum()), 1)))
        feats = features(model, x)
        mask = labels >= 0
        truth = labels[mask]
        for k, f in feats.items():
            pf = f[0].permute(1, 2, 0)[mask]  # (P, C)
            bank = torch.stack([protos[o][k] for o in present])  # (O, C)
            guess = torch.tensor(present)[(pf @ bank.T).argmax(1)]
            right[k] += int((guess == truth).sum())
        total += int(mask.sum())
        chance.extend([1 / len(present)] * int(mask.sum()))
    return {"images": min(args.max_images, len(split.images)), "patches": total,
            "chance": round(float(np.mean(chance)), 3) if chance else None,
            "weights": args.weights or "random small16",
            "prior_iou": round(float(np.mean(prior_iou)), 3) if prior_iou else None,
            **{k: round(v / max(total, 1), 3) for k, v in right.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--templates", required=True, help="template archives (obj_XXXXXX.npz)")
    ap.add_argument("--weights", help="model whose ViT to measure (default: a random small16)")
    ap.add_argument("--max-images", type=int, default=40)
    ap.add_argument("--views", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
