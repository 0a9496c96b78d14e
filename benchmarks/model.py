"""Time per network evaluation and per full sample of the OC-DiT model.

Configs: `tiny` and `official-reduced` (the official architecture — ViT-S/14 backbone, full VAE,
D=1024 transformer — at 224x224 with 4 blocks and 4 objects so that it finishes on a CPU).
Runs on whatever device is given (default: CUDA if available) and prints it. Not a test.

    python benchmarks/model.py [--device cpu] [--configs tiny official-reduced] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ocdit_ros.model import OCDiT, OCDiTConfig, edm, tiny
from ocdit_ros.model.config import DiffuserConfig


def official_reduced() -> OCDiTConfig:
    return OCDiTConfig(image_size=(224, 224), template_size=(126, 126),
                       diffuser=DiffuserConfig(hidden_size=1024, depth=4, num_heads=16))


CONFIGS = {
    # name: (config factory, image (H, W), objects, templates per object, ensemble size)
    "tiny": (tiny, (112, 112), 4, 8, 2),
    "official-reduced": (official_reduced, (224, 224), 4, 8, 1),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")

    for cname in args.configs:
        make, hw, n, t, e = CONFIGS[cname]
        cfg = make()
        torch.manual_seed(0)
        model = OCDiT.from_config(cfg).to(device).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        images = torch.rand(1, 3, *hw, device=device)
        templates = torch.rand(1, n, t, 3, *cfg.template_size, device=device)
        steps = model.sampler_config.num_steps
        with torch.inference_mode():
            feats = model.extract_features(images, templates)
            cond = model.diffuser.condition(*feats)
            x = torch.randn(e, n, cfg.vae.z_channels, *cond.grid, device=device)
            sigma = torch.tensor([1.0], device=device)
            t_feat = timed(lambda: model.extract_features(images, templates), device, args.repeats)
            t_cond = timed(lambda: model.diffuser.condition(*feats), device, args.repeats)
            t_nfe = timed(lambda: model.diffuser.denoise(x, sigma, cond), device, args.repeats)
            t_lat = timed(lambda: model.diffuser.sample(None, None, e, model.sampler_config, cond=cond), device,
                          max(1, args.repeats // 2))
            t_full = timed(lambda: model.generate_segmentations(images, templates, e), device,
                           max(1, args.repeats // 2))
        print(f"\n[{cname}] {params:.1f} M params, image {hw[0]}x{hw[1]}, {n} objects x {t} templates "
              f"{cfg.template_size[0]}px, ensemble {e}, {steps} steps = {edm.num_evaluations(steps)} NFE")
        print(f"  backbone features (image + templates): {t_feat * 1e3:9.1f} ms")
        print(f"  conditioning (template K/V, image tokens): {t_cond * 1e3:7.1f} ms")
        print(f"  one network evaluation (E={e}):        {t_nfe * 1e3:9.1f} ms")
        print(f"  latent sampling ({edm.num_evaluations(steps)} NFE):            {t_lat * 1e3:9.1f} ms")
        print(f"  full generate_segmentations:          {t_full * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
