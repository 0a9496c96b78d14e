"""Behaviour of the OC-DiT model on the tiny config (seconds on 2 CPU cores)."""

import dataclasses

import pytest
import torch

from ocdit_ros.model import OCDiT, OCDiTConfig, tiny


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = OCDiT.from_config(tiny()).eval()
    # Random but non-trivial weights everywhere (fresh adaLN weights are zero, which would hide
    # conditioning bugs).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


def inputs(b=2, n=3, t=4, hw=(112, 98), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, *hw, generator=g), torch.rand(b, n, t, 3, 42, 42, generator=g)


def test_generate_segmentations_shapes_and_range(model):
    images, templates = inputs()
    probs = model.generate_segmentations(images, templates, ensemble_size=2)
    assert probs.shape == (2, 3, 128, 112)  # VAE resolution: 16/14 of the image, like the official code
    assert probs.min() >= 0 and probs.max() <= 1
    full = model.generate_segmentations(images, templates, ensemble_size=2, output_size="input")
    assert full.shape == (2, 3, 112, 98)


def test_same_seed_same_result_other_seed_differs(model):
    images, templates = inputs()
    torch.manual_seed(3)
    a = model.generate_segmentations(images, templates, ensemble_size=2)
    torch.manual_seed(3)
    b = model.generate_segmentations(images, templates, ensemble_size=2)
    torch.manual_seed(4)
    c = model.generate_segmentations(images, templates, ensemble_size=2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    ga = model.generate_segmentations(images, templates, 2, generator=torch.Generator().manual_seed(5))
    gb = model.generate_segmentations(images, templates, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ga, gb)


def test_cross_attention_sees_only_the_objects_own_templates(model):
    images, templates = inputs(b=1, n=3)
    changed = templates.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])
    block = model.diffuser.decoder.blocks[0]
    x = torch.randn(1, 3, 8 * 7, model.config.diffuser.hidden_size)
    t_cross = torch.randn(1, 3, model.config.diffuser.hidden_size)
    with torch.no_grad():
        out_a = block.cross(x, t_cross, model.condition(images, templates).template_kv[0])
        out_b = block.cross(x, t_cross, model.condition(images, changed).template_kv[0])
    assert torch.equal(out_a[:, 0], out_b[:, 0]) and torch.equal(out_a[:, 2], out_b[:, 2])
    assert (out_a[:, 1] - out_b[:, 1]).abs().max() > 1e-4
    # ... while the full network lets objects interact through self-attention.
    z = torch.randn(1, 3, 4, 8, 7)
    with torch.no_grad():
        fa = model.diffuser.denoise(z, torch.tensor([1.0]), model.condition(images, templates))
        fb = model.diffuser.denoise(z, torch.tensor([1.0]), model.condition(images, changed))
    assert (fa[:, 0] - fb[:, 0]).abs().max() > 1e-6


def test_batched_equals_single_with_per_item_sigma(model):
    images, templates = inputs(b=3)
    feats = model.extract_features(images, templates)
    x = torch.randn(3, 3, 4, 8, 7)
    sigma = torch.tensor([0.05, 1.3, 20.0])
    with torch.no_grad():
        batched, logvar = model.diffuser.forward_noise(x, sigma, *feats, return_logvar=True)
        for i in range(3):
            single = model.diffuser.forward_noise(x[i:i + 1], sigma[i:i + 1], feats[0][i:i + 1], feats[1][i:i + 1])
            torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-5, atol=1e-5)
    assert logvar.shape == (3, 1, 1, 1, 1)


def test_official_cross_attention_sigma_quirk_is_reproduced():
    cfg = tiny()
    cfg.diffuser.cross_attn_sigma = "official"
    torch.manual_seed(0)
    m = OCDiT.from_config(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images, templates = inputs(b=2)
    feats = m.extract_features(images, templates)
    x = torch.randn(2, 3, 4, 8, 7)
    with torch.no_grad():
        shared = m.diffuser.forward_noise(x, torch.tensor([2.0, 2.0]), *feats)
        single0 = m.diffuser.forward_noise(x[:1], torch.tensor([2.0]), feats[0][:1], feats[1][:1])
        mixed = m.diffuser.forward_noise(x, torch.tensor([0.1, 2.0]), *feats)
        mixed0 = m.diffuser.forward_noise(x[:1], torch.tensor([0.1]), feats[0][:1], feats[1][:1])
    torch.testing.assert_close(shared[:1], single0, rtol=1e-5, atol=1e-5)  # shared sigma: no effect
    assert (mixed[:1] - mixed0).abs().max() > 1e-4  # per-sample sigma: rows get t[(b*N+n) % B]


def test_ensemble_fold_matches_repeated_images(model):
    """E members of one image through the folded cross-attention == E copies of the image."""
    images, templates = inputs(b=2)
    cond = model.condition(images, templates)
    rep = model.condition(images.repeat_interleave(3, 0), templates.repeat_interleave(3, 0))
    x = torch.randn(6, 3, 4, 8, 7)
    with torch.no_grad():
        a = model.diffuser.denoise(x, torch.tensor([0.7]), cond)
        b = model.diffuser.denoise(x, torch.tensor([0.7]), rep)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,t", [(1, 1), (3, 12), (8, 12), (10, 4), (2, 14)])
def test_object_and_template_counts_around_capacity(model, n, t):
    images, templates = inputs(b=1, n=n, t=t)
    probs = model.generate_segmentations(images, templates, ensemble_size=1)
    assert probs.shape == (1, n, 128, 112)
    assert torch.isfinite(probs).all()


def test_fewer_objects_use_first_encodings_in_eval_and_windows_in_training(model):
    pe = model.diffuser.queries_embedder.pe_classes.pe
    first = model.diffuser.queries_embedder.class_pe(3, training=False, mode="random_interval", start=None)
    torch.testing.assert_close(first, pe[:, :3])
    torch.manual_seed(0)
    starts = set()
    for _ in range(200):
        w = model.diffuser.queries_embedder.class_pe(3, training=True, mode="random_interval", start=None)
        starts.add(int(((pe[:, :, 0] - w[:, 0, 0][:, None]).abs().sum(-1) < 1e-9).nonzero()[0, 1]))
    assert starts == set(range(0, 8 - 3 + 1))  # every window, the last one included


def test_image_grids_larger_and_smaller_than_the_constructor_grid(model):
    for hw in [(70, 84), (112, 112), (154, 196)]:
        images, templates = inputs(b=1, n=2, hw=hw)
        probs = model.generate_segmentations(images, templates, ensemble_size=1, output_size="input")
        assert probs.shape == (1, 2, *hw)
        assert torch.isfinite(probs).all()


def test_template_size_other_than_constructed_is_interpolated(model):
    images, _ = inputs(b=1)
    templates = torch.rand(1, 2, 3, 3, 56, 56)
    assert model.generate_segmentations(images, templates, 1).shape == (1, 2, 128, 112)


def test_forward_loss_trains_only_trainable_parts():
    cfg = tiny()
    cfg.backbone.trainable = False
    m = OCDiT.from_config(cfg).train()
    images, templates = inputs(b=2, n=2)
    masks = (torch.rand(2, 2, 128, 112) > 0.5).float()
    out = m.forward_loss(images, templates, masks)
    assert set(out) == {"loss", "weight", "loss_masks"} and out["loss"].shape == (2,)
    out["loss"].mean().backward()
    assert all(p.grad is None for p in m.feature_extractor.parameters())
    assert all(p.grad is None for p in m.vae.parameters())
    grads = [p.grad for p in m.diffuser.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_bad_inputs_have_clear_errors(model):
    images, templates = inputs()
    with pytest.raises(ValueError, match="multiple of the backbone patch size 14"):
        model.generate_segmentations(torch.rand(2, 3, 100, 98), templates, 1)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        model.generate_segmentations(torch.rand(2, 1, 112, 98), templates, 1)
    with pytest.raises(ValueError, match="2 images but templates for 1"):
        model.generate_segmentations(images, templates[:1], 1)
    with pytest.raises(ValueError, match="at least one object"):
        model.generate_segmentations(images, templates[:, :0], 1)
    with pytest.raises(ValueError, match="ensemble_size must be >= 1"):
        model.generate_segmentations(images, templates, 0)
    with pytest.raises(ValueError, match=r"masks_gt must be \(B=2, N=3, 128, 112\)"):
        model.forward_loss(images, templates, torch.zeros(2, 3, 112, 98))
    with pytest.raises(ValueError, match="unknown sampling parameters"):
        model.diffuser.sample(*model.extract_features(images, templates), 1, {"steps": 3})


def test_config_validation_and_yaml_round_trip(tmp_path):
    cfg = tiny()
    cfg.to_yaml(tmp_path / "m.yaml")
    back = OCDiTConfig.from_yaml(tmp_path / "m.yaml")
    assert back == cfg
    with pytest.raises(ValueError, match="divisible by num_heads"):
        OCDiTConfig(diffuser=dataclasses.replace(cfg.diffuser, hidden_size=30))
    (tmp_path / "bad.yaml").write_text("image_size: [112, 112]\nbackbone: {embed_dims: 3}\n")
    with pytest.raises(ValueError, match="unknown keys.*embed_dims.*backbone"):
        OCDiTConfig.from_yaml(tmp_path / "bad.yaml")


def test_cached_sampling_matches_the_reference_path():
    """Conditioning reused across evaluations and the shared-noise fast path give the same
    masks as rebuilding everything at every evaluation (Diffuser.cache = False)."""
    torch.manual_seed(3)
    model = OCDiT.from_config(tiny()).eval()
    with torch.no_grad():  # non-trivial adaLN (fresh models are adaLN-Zero: modulation would be 0)
        for p in model.diffuser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 112, 112, generator=g)
    templates = torch.rand(2, 3, 2, 3, 42, 42, generator=g)
    out = {}
    for cache in (True, False):
        model.diffuser.cache = cache
        out[cache] = model.generate_segmentations(images, templates, 3, generator=torch.Generator().manual_seed(5))
    model.diffuser.cache = True
    assert out[True].shape == (2, 3, 128, 128)
    assert (out[True] - out[False]).abs().max() < 1e-5
    assert out[True].std() > 1e-3  # masks that depend on the input, not a constant


def test_subpixel_upsample_equals_nearest_upsampling_then_conv():
    from ocdit_ros.model.vae import Upsample

    torch.manual_seed(0)
    for channels in (16, 64):  # plain path and the four-phase path
        up = Upsample(channels)
        x = torch.randn(2, channels, 5, 7)
        with torch.no_grad():
            ref = up.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
            out = up(x)
        assert out.shape == (2, channels, 10, 14)
        assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
