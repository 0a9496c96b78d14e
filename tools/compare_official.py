"""Compare ocdit_ros.model.OCDiT against dumps of the official DLR-RM/oc-dit classes.

The official code is not part of this repository. Produce reference dumps with a scratch
harness that builds the official `OCDiT(image_size=(224, 224), template_size=(70, 70),
embed_dim=128, depth=2, num_heads=4)` and records inputs and outputs of every stage (see
docs/model.md, "Compatibility"). This script

  official -> ours:  loads the official weights (strict) and recomputes every stage;
  ours -> official:  `--export W` writes our own randomly initialised weights for the
                     harness to load with strict=True.

    python tools/compare_official.py --weights w_small.safetensors --reference ref_small.safetensors
"""

from __future__ import annotations

import argparse
import sys

import torch
from safetensors.torch import load_file, save_file

from ocdit_ros.model import OCDiT, load_weights


def small_model() -> OCDiT:
    return OCDiT(image_size=(224, 224), template_size=(70, 70), embed_dim=128, depth=2, num_heads=4)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| (relative to the tensor's scale)."""
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def compare(weights: str, reference: str, tol: float) -> bool:
    ref = load_file(reference)
    model = small_model()
    load_weights(model, weights)
    model.eval()
    out: dict[str, torch.Tensor] = {}
    images, templates, masks = ref["images"], ref["templates"], ref["masks_gt"]
    with torch.no_grad():
        imf, tf = model.extract_features(images, templates)
        out["image_features"], out["template_features"] = imf, tf
        x, sigma, c_noise = ref["x"], ref["sigma"], ref["c_noise"]
        out["F"] = model.diffuser.forward(x, c_noise, imf, tf)
        out["D"], out["logvar"] = model.diffuser.forward_noise(x, sigma, imf, tf, return_logvar=True)
        out["D_single"] = torch.cat([model.diffuser.forward_noise(x[b:b + 1], sigma[b:b + 1], imf[b:b + 1], tf[b:b + 1])
                                     for b in range(x.shape[0])])
        m = masks.flatten(0, 1).unsqueeze(1)
        out["z_mean"] = model.vae.encode_latents(m, sample_posterior=False)
        torch.manual_seed(7)
        out["z_sample"] = model.vae.encode_latents(m, sample_posterior=True)
        out["logits"] = model.vae.decode(out["z_mean"][:4], apply_sigmoid=False)
        out["probs"] = model.vae.decode(out["z_mean"][:4], apply_sigmoid=True)
        torch.manual_seed(42)
        out["seg"] = model.generate_segmentations(images, templates, ensemble_size=2)
        out["seg_again"] = model.generate_segmentations(images, templates, ensemble_size=1)
        out["F10"] = model.diffuser.forward(ref["x10"], ref["c10"], ref["imf10"], ref["tf10"])
        out["F3"] = model.diffuser.forward(ref["x3"], ref["c3"], ref["imf3"], ref["tf3"])
        torch.manual_seed(9)
        out["zs"] = model.diffuser.sample(imf, tf, ensemble_size=2, sampling_parameters={
            "num_steps": 4, "sigma_min": 0.002, "sigma_max": 80, "rho": 7})
    for mode in ("eval", "train"):
        model.train(mode == "train")
        torch.manual_seed(5)
        for k, v in model.forward_loss(images, templates, masks).items():
            out[f"loss_{mode}_{k}"] = v.detach()
    model.eval()

    ok = True
    print(f"{'tensor':<22}{'shape':<28}{'max rel err':>14}")
    for name, value in out.items():
        if name not in ref:
            print(f"{name:<22}{'(not in reference)':<28}")
            continue
        if value.shape != ref[name].shape:
            print(f"{name:<22}{str(tuple(value.shape)):<28}{'SHAPE MISMATCH vs ' + str(tuple(ref[name].shape)):>14}")
            ok = False
            continue
        err = rel_err(value, ref[name])
        flag = "" if err <= tol else "  FAIL"
        ok &= err <= tol
        print(f"{name:<22}{str(tuple(value.shape)):<28}{err:>14.2e}{flag}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="official state_dict (.safetensors)")
    ap.add_argument("--reference", help="official dump (.safetensors)")
    ap.add_argument("--export", help="write our own random weights here (for the official harness)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    if args.export:
        torch.manual_seed(1234)
        model = small_model()
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.export)
        print(f"wrote {len(model.state_dict())} tensors to {args.export}")
    if args.weights and args.reference:
        sys.exit(0 if compare(args.weights, args.reference, args.tol) else 1)


if __name__ == "__main__":
    main()
