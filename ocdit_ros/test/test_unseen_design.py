"""The default model's design for unseen objects: fixed colour descriptor, 16x16 grid, recoloured identities."""

import numpy as np
import pytest
import torch

from ocdit_ros.model import OCDiT, small16, tiny
from ocdit_ros.model.descriptor import descriptor_dim, patch_descriptor
from ocdit_ros.training.samples import SampleSource, apply_colour, load_template_bank, random_recolour

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
    src, plain = SampleSource(cfg, tiny(), bank), SampleSource(plain_cfg, tiny(), bank)
    checked, differs = 0, 0
    for index in range(12):
        s = src.sample(index)
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
            differs += int(not torch.allclose(tpl, plain.sample(index)["templates"][n, 0][:, 21, 21], atol=0.05))
    assert checked >= 5 and differs >= checked - 1
