"""Outputs of the official classes, recorded once, against ours (same weights, same inputs).

`data/official_small_fixture.safetensors` holds small instances of the official DINOv2 ViT,
ConvVAE and Diffuser (random weights), their inputs and outputs, produced by a scratch
harness around DLR-RM/oc-dit @ c696480 and facebookresearch/dinov2 @ b8931f7 (docs/model.md).
Loading them with strict=True proves the state_dict layout; the outputs prove the numerics.
`io.ocdit_*` are the outputs of an official `OCDiT` assembled from those three parts (its
normalisation, feature extraction and ensemble-averaged `generate_segmentations`).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ocdit_ros.model.backbone import VisionTransformer
from ocdit_ros.model.config import BackboneConfig, DiffuserConfig, VAEConfig
from ocdit_ros.model.diffuser import Diffuser
from ocdit_ros.model.vae import BinaryMaskVAE, ConvVAE

FIXTURE = Path(__file__).parent / "data" / "official_small_fixture.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return load_file(str(FIXTURE))


def part(ref, prefix):
    return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


def assert_rel(ours, theirs):
    assert ours.shape == theirs.shape
    err = ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()
    assert err < TOL, f"max relative error {err:.2e}"


def test_dinov2_vit_matches_official(ref):
    vit = VisionTransformer(BackboneConfig(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112))
    vit.load_state_dict(part(ref, "vit."), strict=True)
    with torch.no_grad():
        assert_rel(vit.patch_tokens(ref["io.vit_in_a"]), ref["io.vit_out_a"])  # native grid
        assert_rel(vit.patch_tokens(ref["io.vit_in_b"]), ref["io.vit_out_b"])  # bicubic pos-embed resize


def test_vae_matches_official(ref):
    cfg = VAEConfig(z_channels=4, down_channels=(8, 8, 16, 16, 16), up_channels=(16, 16, 16, 8, 8),
                    num_blocks=1, num_groups=4, final_std=1.0)  # scale 1: compare the raw ConvVAE
    vae = BinaryMaskVAE(cfg)
    assert isinstance(vae.net, ConvVAE)
    vae.net.load_state_dict(part(ref, "vae."), strict=True)
    masks = ref["io.vae_masks"]
    with torch.no_grad():
        mean = vae.encode_latents(masks, sample_posterior=False)
        assert_rel(mean, ref["io.vae_mean"])
        assert_rel(vae.decode(mean), ref["io.vae_logits"])
        torch.manual_seed(7)
        assert_rel(vae.encode_latents(masks, sample_posterior=True), ref["io.vae_sample"])


@pytest.fixture(scope="module")
def diffuser(ref):
    cfg = DiffuserConfig(hidden_size=32, depth=2, num_heads=4)
    d = Diffuser(cfg, image_grid=(8, 8), template_grid=(3, 3), feature_dim=48, latent_channels=4)
    d.load_state_dict(part(ref, "dif."), strict=True)
    return d.eval()


def test_diffuser_network_and_preconditioning_match_official(ref, diffuser):
    imf, tf, x, sigma = ref["io.dif_imf"], ref["io.dif_tf"], ref["io.dif_x"], ref["io.dif_sigma"]
    with torch.no_grad():
        # per-sample sigma in one batch: reproduces the official cross-attention row quirk too
        assert_rel(diffuser.forward(x, sigma.log() / 4, imf, tf), ref["io.dif_F"])
        d, logvar = diffuser.forward_noise(x, sigma, imf, tf, return_logvar=True)
        assert_rel(d, ref["io.dif_D"])
        assert_rel(logvar, ref["io.dif_logvar"])


def test_diffuser_object_counts_below_and_above_capacity_match_official(ref, diffuser):
    imf, sigma = ref["io.dif_imf"], ref["io.dif_sigma"]
    with torch.no_grad():
        assert_rel(diffuser.forward(ref["io.dif_x3"], sigma.log() / 4, imf, ref["io.dif_tf3"]), ref["io.dif_F3"])
        c = torch.tensor([0.1])
        assert_rel(diffuser.forward(ref["io.dif_x10"], c, ref["io.dif_imf10"], ref["io.dif_tf10"]), ref["io.dif_F10"])


def test_sampler_matches_official_for_the_same_seed(ref, diffuser):
    torch.manual_seed(11)
    with torch.no_grad():
        out = diffuser.sample(ref["io.dif_imf"], ref["io.dif_tf"], ensemble_size=2, sampling_parameters={
            "num_steps": 5, "sigma_min": 0.002, "sigma_max": 80, "rho": 9})
    assert_rel(out, ref["io.dif_sample"])


def test_training_loss_matches_official_including_random_draws(ref, diffuser):
    diffuser.train()
    try:
        torch.manual_seed(13)
        out = diffuser.forward_loss(ref["io.dif_imf"], ref["io.dif_tf"], ref["io.dif_x"] * 0.5)
    finally:
        diffuser.eval()
    for key in ("loss", "weight", "loss_masks"):
        assert_rel(out[key].detach(), ref[f"io.dif_loss_{key}"])


@pytest.fixture(scope="module")
def ocdit(ref):
    """Our OCDiT holding the same three parts as the recorded official OCDiT (`io.ocdit_*`): the
    official class with the small ViT, VAE and diffuser above, mean = std = 0.5 normalisation and
    its default sampler (9 Heun steps, rho 9)."""
    from ocdit_ros.model import OCDiT
    from ocdit_ros.model.config import OCDiTConfig, SamplerConfig

    cfg = OCDiTConfig(image_size=(112, 112), template_size=(42, 42),
                      backbone=BackboneConfig(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112),
                      vae=VAEConfig(z_channels=4, down_channels=(8, 8, 16, 16, 16), up_channels=(16, 16, 16, 8, 8),
                                    num_blocks=1, num_groups=4),  # official scale 0.5 (final_std default)
                      diffuser=DiffuserConfig(hidden_size=32, depth=2, num_heads=4),
                      sampler=SamplerConfig(num_steps=9, rho=9.0))
    model = OCDiT.from_config(cfg)
    model.feature_extractor.model.load_state_dict(part(ref, "vit."), strict=True)
    model.vae.net.load_state_dict(part(ref, "vae."), strict=True)
    model.diffuser.load_state_dict(part(ref, "dif."), strict=True)
    assert model.sampling_parameters == {"num_steps": 9, "sigma_min": 0.002, "sigma_max": 80, "rho": 9}
    return model.eval()


def ocdit_inputs(ref):
    return ref["io.ocdit_images_u8"].float() / 255, ref["io.ocdit_templates_u8"].float() / 255  # 1 image, 8 objects


def test_ocdit_normalises_and_extracts_features_like_official(ref, ocdit):
    with torch.no_grad():
        imf, tf = ocdit.extract_features(*ocdit_inputs(ref))
    assert_rel(imf, ref["io.ocdit_image_features"])
    assert_rel(tf, ref["io.ocdit_template_features"])


def test_ocdit_generate_segmentations_is_the_official_ensemble_mean(ref, ocdit):
    torch.manual_seed(31)
    seg = ocdit.generate_segmentations(*ocdit_inputs(ref), ensemble_size=2)
    assert_rel(seg, ref["io.ocdit_seg"])
