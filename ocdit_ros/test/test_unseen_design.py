"""The default model's design for unseen objects: fixed colour descriptor, 16x16 grid, recoloured identities."""

import numpy as np
import pytest
import torch

from ocdit_ros.model import OCDiT, small16, tiny
from ocdit_ros.model.descriptor import (HIST_CHANNELS, descriptor_dim, patch_descriptor, template_foreground,
                                        template_patch_foreground)
from ocdit_ros.training.examples import ExampleSource, apply_colour, load_template_bank, random_recolour

from test_training import _cfg, _write_templates


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """A hand-made BOP scene whose three rectangles never overlap, so each visible mask shows only
    its own object's colour (the template colours of test_training._write_templates)."""
    import json

    from PIL import Image

    root = tmp_path_factory.mktemp("separate")
    scene = root / "train" / "000000"
    for sub in ("rgb", "mask_visib"):
        (scene / sub).mkdir(parents=True)
    colours = {1: (220, 40, 40), 2: (40, 220, 40), 3: (40, 40, 220)}
    gt, info = {}, {}
    for im in range(3):
        rgb = np.full((60, 90, 3), 90, np.uint8)
        gt[str(im)], info[str(im)] = [], []
        for k, oid in enumerate((1, 2, 3)):
            x0, y0 = 30 * k + 3 + im, 10 + 5 * im
            mask = np.zeros((60, 90), bool)
            mask[y0:y0 + 30, x0:x0 + 22] = True
            rgb[mask] = colours[oid]
            Image.fromarray(mask.astype(np.uint8) * 255).save(scene / "mask_visib" / f"{im:06d}_{k:06d}.png")
            gt[str(im)].append({"obj_id": oid, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 500]})
            info[str(im)].append({"bbox_visib": [x0, y0, 22, 30], "visib_fract": 1.0, "px_count_visib": 660})
        Image.fromarray(rgb).save(scene / "rgb" / f"{im:06d}.png")
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    (scene / "scene_gt_info.json").write_text(json.dumps(info))
    cam = {"cam_K": [100.0, 0, 45, 0, 100.0, 30, 0, 0, 1], "depth_scale": 1.0}
    (scene / "scene_camera.json").write_text(json.dumps({str(i): cam for i in range(3)}))
    _write_templates(root / "templates")
    return root / "train", root / "templates"


def test_colour_descriptor_bins_a_patch_by_its_colours():
    img = torch.zeros(1, 3, 16, 16)
    img[:, :, :8, :8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # one red patch
    img[:, :, :8, 8:] = 0.6  # one grey patch
    img[:, 0, 8:, :8] = torch.linspace(0, 1, 8)  # a patch with a red ramp: several bins, non-zero std
    d = patch_descriptor(img, 8, "colour_hist")
    assert d.shape == (1, descriptor_dim("colour_hist"), 2, 2) == (1, 70, 2, 2)
    hist, mean, std = d[0, :64], d[0, 64:67], d[0, 67:]
    red_bin = (3 * 4 + 0) * 4 + 0  # r in the top bin, g and b in the lowest
    grey_bin = (2 * 4 + 2) * 4 + 2
    assert hist[red_bin, 0, 0] == pytest.approx(1.0) and hist[:, 0, 0].sum() == pytest.approx(1.0)
    assert hist[grey_bin, 0, 1] == pytest.approx(1.0)
    assert torch.allclose(mean[:, 0, 0], torch.tensor([0.9, 0.1, 0.1])) and torch.all(std[:, 0, 0] < 1e-3)
    assert (hist[:, 1, 0] > 0).sum() == 4 and std[0, 1, 0] > 0.2  # the ramp spans the four red bins
    # Hellinger embedding: two patches' dot product is 1 for equal colour distributions.
    assert float((hist[:, 0, 0] * hist[:, 0, 0]).sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="descriptor"):
        descriptor_dim("sift")


def test_small16_has_a_16x16_grid_and_features_carry_the_descriptor():
    cfg = small16()
    assert cfg.grid == (16, 16) and cfg.template_grid == (6, 6) and cfg.mask_size(cfg.image_size) == (128, 128)
    assert cfg.backbone.feature_dim == cfg.backbone.embed_dim + 70
    model = OCDiT.from_config(cfg).eval()
    img = torch.rand(2, 3, 128, 128)
    feats = model.feature_extractor(model.normalize(img))
    assert feats.shape == (2, cfg.backbone.feature_dim, 16, 16)
    # The last 70 channels are the fixed descriptor of the [0, 1] image, whatever the ViT learns.
    assert torch.allclose(feats[:, -70:], patch_descriptor(img, 8, "colour_hist"), atol=1e-6)
    # The paper's layout stays descriptor-free (official presets are unchanged).
    assert tiny().backbone.feature_dim == tiny().backbone.embed_dim
    out = model.generate_segmentations(img[:1], torch.rand(1, 2, 3, 3, 48, 48), ensemble_size=1)
    assert out.shape == (1, 2, 128, 128)


def test_recolour_keeps_greys_and_changes_colours():
    rng = np.random.default_rng(3)
    m = random_recolour(rng)
    grey = np.array([[0, 0, 0], [100, 100, 100]], np.uint8)
    out = apply_colour(grey, m)
    assert np.all(out[0] == 0) and np.ptp(out[1].astype(int)) <= 1  # black stays black, greys stay grey
    red = np.array([[200, 30, 30]], np.uint8)
    moved = [apply_colour(red, random_recolour(rng))[0] for _ in range(20)]
    assert len({tuple(int(v) // 40 for v in c) for c in moved}) > 5  # many different identities


def test_recoloured_objects_match_their_templates(separate, tmp_path):
    """An object's new colour is the same in the image and in its templates (recolour_prob 1)."""
    cfg = _cfg("coarse", separate, tmp_path, recolour_prob=1.0, colour_jitter=0.0)
    plain_cfg = _cfg("coarse", separate, tmp_path, recolour_prob=0.0, colour_jitter=0.0)
    bank = load_template_bank(cfg.templates)
    src, plain = ExampleSource(cfg, tiny(), bank), ExampleSource(plain_cfg, tiny(), bank)
    checked, differs = 0, 0
    for index in range(12):
        s = src.example(index)
        for n in range(2):
            m = s["masks"][n] > 0
            if m.sum() < 200:
                continue
            inner = torch.nn.functional.interpolate(m[None, None].float(), size=(112, 112))[0, 0] > 0.99
            inner = torch.nn.functional.max_pool2d((~inner)[None].float(), 5, 1, 2)[0] == 0  # away from edges
            if inner.sum() < 20:
                continue
            tpl = s["templates"][n, 0][:, 21, 21]
            # colour_jitter 0 still adds a little sensor noise
            close = ((s["images"][:, inner] - tpl[:, None]).abs().max(0).values < 0.1).float().mean()
            assert close > 0.9, (index, n, float(close), tpl)
            checked += 1
            differs += int(not torch.allclose(tpl, plain.example(index)["templates"][n, 0][:, 21, 21], atol=0.05))
    assert checked >= 5 and differs >= checked - 1


def test_refine_negatives_can_ask_for_another_object_of_the_image(separate, tmp_path):
    """present_negative_rate 1: every wrong-object query names another object of the image; the
    target is that object's pixels in the crop (none here: the rectangles never share a crop
    centre) and its templates show that object's colour, not the crop's centre object's."""
    cfg = _cfg("refine", separate, tmp_path, false_positive_rate=1.0, present_negative_rate=1.0,
               colour_jitter=0.0, refine_box_scale=(1.2, 1.2), refine_box_shift=0.0)
    src = ExampleSource(cfg, tiny(), load_template_bank(cfg.templates))
    colours = {(220, 40, 40), (40, 220, 40), (40, 40, 220)}
    for index in range(8):
        s = src.example(index)
        centre = tuple(int(v) for v in (s["images"][:, 56, 56] * 255).round())
        asked = tuple(int(v) for v in (s["templates"][0, 0][:, 21, 21] * 255).round())
        near = lambda c: min(colours, key=lambda k: sum(abs(a - b) for a, b in zip(k, c)))  # noqa: E731
        assert near(asked) != near(centre), (index, asked, centre)
        # The 1.2x crop of a 22x30 rectangle holds at most slivers of its neighbours (3 px away).
        assert s["masks"].mean() < 0.1
    # Rate 0 keeps the old stream (absent objects only): the same examples as before the option.
    old = ExampleSource(_cfg("refine", separate, tmp_path, false_positive_rate=1.0), tiny(),
                       load_template_bank(cfg.templates))
    assert all(float(old.example(i)["masks"].sum()) == 0 for i in range(4))


def _prior_inputs():
    """One 16x16 image of four 8 px patches (red, green, grey, red/green) and templates of two
    objects (red; green), each a red or green square on the black rendering background."""
    img = torch.zeros(1, 3, 16, 16)
    img[:, :, :8, :8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, :, :8, 8:] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]
    img[:, :, 8:, :8] = 0.6
    img[:, :, 8:, 8:12] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, :, 8:, 12:] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]
    tpl = torch.zeros(1, 2, 2, 3, 16, 16)  # (B, N, T, 3, h, w): background everywhere ...
    tpl[0, 0, :, :, :8, :8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # ... but one patch per view
    tpl[0, 1, :, :, 8:, 8:] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]
    feats = lambda x: patch_descriptor(x.reshape(-1, 3, 16, 16), 8, "colour_hist").reshape(*x.shape[:-3], 70, 2, 2)
    return feats(img), feats(tpl)


def test_template_prior_scores_each_image_patch_against_each_objects_templates():
    from ocdit_ros.model.template_prior import TemplatePrior

    prior = TemplatePrior(feature_dim=70, descriptor_dim=70, dim=8)
    maps = prior.maps(*_prior_inputs())  # (B, N, 4 patches, [best, mean])
    best, mean = maps[0, :, :, 0], maps[0, :, :, 1]
    # Patch order: red, green, grey, half red/half green.
    assert best[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5 ** 0.5])  # BC with the red template patch
    assert best[1].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5 ** 0.5])
    assert mean[0, 0] > 0.99 and mean[0, 1] < 0.2 and mean[1, 1] > 0.99 and mean[1, 0] < 0.2
    # The black template background is not part of an object: a black image patch matches nothing.
    img, tpl = _prior_inputs()
    black = patch_descriptor(torch.zeros(1, 3, 16, 16), 8, "colour_hist")
    assert prior.maps(black, tpl).abs().max() < 0.05
    # An object whose templates are all background matches nothing.
    assert prior.maps(img, torch.zeros_like(tpl) + black[:, None, None, :, :, :]).abs().max() == 0
    with pytest.raises(ValueError, match="colour_hist"):
        TemplatePrior(feature_dim=64, descriptor_dim=0, dim=8)


def test_one_template_foreground_rule_for_the_prior_and_the_backbone_prototypes():
    """A template patch is the object's when the object covers more than half of it (estimated from
    its colour statistics). The template prior decides from its descriptor, backbone pretraining and
    the patch-matching benchmark from pixels: the same patches come out."""
    tpl = torch.zeros(2, 3, 32, 32)
    tpl[0, :, :16, :16] = 0.8  # a whole patch of object
    tpl[0, 0, 16:18, 16:18] = 0.5  # 4 of 256 pixels, dim red: a silhouette corner
    tpl[1, 1, 20:32, 0:16] = 0.4  # 12 of 16 rows green: 75 %
    tpl[1, :, 0:16, 16:21] = 0.9  # 5 of 16 columns white: 31 %, bright, still mostly background
    fg = template_patch_foreground(tpl, 16)
    assert fg.tolist() == [[[True, False], [False, False]], [[False, False], [True, False]]]

    def prior_view(t, patch):
        d = patch_descriptor(t, patch, "colour_hist")[:, HIST_CHANNELS:].movedim(1, -1)
        mean, std = d[..., :3], d[..., 3:6]
        return template_foreground(mean, std * std + mean * mean)

    assert torch.equal(prior_view(tpl, 16), fg)
    rand = torch.rand(3, 3, 48, 48) * (torch.rand(3, 1, 48, 48) > 0.5)
    assert torch.equal(prior_view(rand, 8), template_patch_foreground(rand, 8))


def test_template_prior_starts_at_zero_and_then_steers_the_queries():
    """Zero-initialised: a small16 model grown by the prior segments exactly like the model it grew
    from; once trained (non-zero), the masks depend on which templates match the image."""
    import dataclasses

    cfg = small16()
    assert cfg.diffuser.template_prior
    plain = dataclasses.replace(cfg, diffuser=dataclasses.replace(cfg.diffuser, template_prior=False))
    torch.manual_seed(0)
    base = OCDiT.from_config(plain).eval()
    grown = OCDiT.from_config(cfg).eval()
    missing = grown.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["diffuser.template_prior.proj.bias", "diffuser.template_prior.proj.weight"]
    img, tpl = torch.rand(1, 3, 128, 128), torch.rand(1, 2, 3, 3, 48, 48)

    def masks(model, templates):
        return model.generate_segmentations(img, templates, 1, generator=torch.Generator().manual_seed(3))

    assert torch.equal(masks(grown, tpl), masks(base, tpl))
    with torch.no_grad():
        grown.diffuser.template_prior.proj.weight.normal_(std=2.0)
    assert (masks(grown, tpl) - masks(base, tpl)).abs().max() > 0.05
    # The cached sampler and the reference path (conditioning rebuilt per step) agree with the prior.
    grown.diffuser.cache = False
    reference = masks(grown, tpl)
    grown.diffuser.cache = True
    assert torch.allclose(masks(grown, tpl), reference, atol=1e-5)
    # The official presets and `tiny` have no prior (official state_dict keys unchanged).
    assert not tiny().diffuser.template_prior
    with pytest.raises(ValueError, match="descriptor"):
        dataclasses.replace(tiny(), diffuser=dataclasses.replace(tiny().diffuser, template_prior=True))


def test_init_partial_grows_a_trained_model_keeping_its_weights_and_vae_scale(tmp_path):
    import dataclasses

    from ocdit_ros.model.weights import save_weights
    from ocdit_ros.training.config import TrainConfig
    from ocdit_ros.training.trainer import build_model

    cfg = small16()
    plain = dataclasses.replace(cfg, diffuser=dataclasses.replace(cfg.diffuser, template_prior=False),
                                vae=dataclasses.replace(cfg.vae, raw_std=1.8))
    trained = OCDiT.from_config(plain)
    save_weights(trained, tmp_path / "stage1.safetensors")
    init = str(tmp_path / "stage1.safetensors")
    as_stored = build_model(TrainConfig(stage="coarse", model="small16", init=init))
    assert as_stored.diffuser.template_prior is None  # without init_partial the stored model is the model
    grown = build_model(TrainConfig(stage="coarse", model="small16", init=init, init_partial=True))
    assert grown.diffuser.template_prior is not None and grown.config.vae.raw_std == 1.8
    own, stored = grown.state_dict(), trained.state_dict()
    assert all(torch.equal(own[k], v) for k, v in stored.items())
    assert grown.diffuser.template_prior.proj.weight.abs().max() == 0
    assert grown.diffuser.template_prior.proj.weight.requires_grad
