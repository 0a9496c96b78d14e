"""Pipeline geometry, aggregation, thresholds, determinism and errors.

Geometry is checked with deterministic oracle models in place of OC-DiT: an oracle "segments"
an object by finding its template colour in the view it is given, so every crop, pad,
augmentation and back-mapping must be right for the instance to land on the planted pixels.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ocdit_ros.model import OCDiT, tiny
from ocdit_ros.pipeline import ObjectSpec, PipelineConfig, Segmenter, StageConfig
from ocdit_ros.pipeline.aggregate import Member, cluster_members, resolve_overlaps
from ocdit_ros.pipeline.views import full_view, region_view

RED, BLUE, GREEN = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)


class ColourOracle:
    """MaskModel that marks pixels matching the object's template colour (optionally remapped)."""

    def __init__(self, grid=(16, 16), capacity=8, remap=None, drop=(), keep_prob=1.0, one_instance_per_member=False):
        self.patch_size, self.grid, self.object_capacity, self.mask_factor = 14, grid, capacity, 16
        self.remap = remap or {}
        self.drop = set(drop)
        self.keep_prob = keep_prob
        self.one_instance_per_member = one_instance_per_member
        self.calls = []

    def image_features(self, images):
        return images.clone()

    def template_features(self, obj):
        colour = obj.templates.mean(dim=(0, 2, 3))
        return colour.reshape(1, 3, 1, 1)

    def sample(self, feats, tf, ensemble, stage, gen):
        v, n = tf.shape[:2]
        self.calls.append((v, n, ensemble))
        hc, wc = feats.shape[-2:]
        out = torch.zeros(v, ensemble, n, hc // 14 * 16, wc // 14 * 16)
        for i in range(v):
            for k in range(n):
                colour = tuple(round(c, 3) for c in tf[i, k, 0, :, 0, 0].tolist())
                if colour in self.drop:
                    continue
                target = torch.tensor(self.remap.get(colour, colour)).reshape(3, 1, 1)
                hit = ((feats[i] - target).abs().max(0).values < 0.2).float()
                m = F.interpolate(hit[None, None], size=out.shape[-2:], mode="nearest")[0, 0]
                for e in range(ensemble):
                    if self.keep_prob >= 1 or torch.rand(1, generator=gen).item() < self.keep_prob:
                        out[i, e, k] = self._pick(m, e) if self.one_instance_per_member else m
        return out


    @staticmethod
    def _pick(mask, member):
        """Like one object query in one ensemble member: a single instance (member-dependent)."""
        from scipy import ndimage

        labels, count = ndimage.label(mask.numpy() > 0)
        if count == 0:
            return mask
        return torch.from_numpy(labels == 1 + member % count).float()


def scene(h=300, w=500):
    img = np.full((h, w, 3), 0.45, dtype=np.float32)
    gt = {}
    img[50:140, 120:180] = RED
    gt["red"] = np.zeros((h, w), bool)
    gt["red"][50:140, 120:180] = True
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 210) ** 2 + (xx - 380) ** 2 <= 45**2
    img[disc] = BLUE
    gt["blue"] = disc
    return img, gt


def obj(name, colour, views=3):
    return ObjectSpec(name, torch.tensor(colour).reshape(1, 3, 1, 1).expand(views, 3, 14, 14).clone())


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def check_instances(result, gt):
    found = {i.object_id: i for i in result.instances}
    assert set(found) == set(gt), [i.object_id for i in result.instances]
    for name, mask in gt.items():
        inst = found[name]
        assert inst.mask.shape == mask.shape
        assert iou(inst.mask, mask) > 0.9, (name, iou(inst.mask, mask))
        ys, xs = np.nonzero(mask)
        want = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert np.abs(np.array(inst.bbox) - np.array(want)).max() <= 3, (name, inst.bbox, want)


LOOSE = dict(proposal_threshold=0.1, score_threshold=0.5, min_support=0.3)


@pytest.mark.parametrize("augmentations,refine", [(1, False), (1, True), (4, True)])
def test_instances_land_on_planted_pixels(augmentations, refine):
    img, gt = scene()
    cfg = PipelineConfig(coarse=StageConfig(ensemble=2, augmentations=augmentations),
                         refine=StageConfig(ensemble=1, augmentations=3), refine_enabled=refine,
                         work_size=500, **LOOSE)
    seg = Segmenter(ColourOracle(), ColourOracle(grid=(8, 8)), cfg)
    result = seg.segment(img, [obj("red", RED), obj("blue", BLUE), obj("green", GREEN)])
    assert result.stage == ("refined" if refine else "coarse")
    check_instances(result, gt)
    for inst in result.instances:
        assert inst.stage == result.stage and 0.5 <= inst.score <= 1.0
        assert inst.uncertainty.shape == img.shape[:2] and inst.uncertainty.dtype == np.float32
        assert inst.agreement > 0.8


def test_guided_augmentation_and_object_chunks_beyond_capacity():
    img, gt = scene(303, 487)
    img[200:240, 20:60] = GREEN
    gt["green"] = np.zeros(img.shape[:2], bool)
    gt["green"][200:240, 20:60] = True
    oracle = ColourOracle(capacity=2)
    cfg = PipelineConfig(coarse=StageConfig(ensemble=1), guided_augmentation=True, refine_enabled=False, **LOOSE)
    result = Segmenter(oracle, config=cfg).segment(img, [obj("red", RED), obj("blue", BLUE), obj("green", GREEN)])
    check_instances(result, gt)
    # 3 objects, capacity 2: two sampler calls per view batch, then the guided view.
    assert [c[1] for c in oracle.calls] == [2, 1, 2, 1]


def test_refine_rejects_false_positives_and_relabels():
    img, gt = scene()
    cfg = PipelineConfig(coarse=StageConfig(ensemble=1), refine=StageConfig(ensemble=1, augmentations=2), **LOOSE)
    # The refine model does not confirm "blue": the coarse proposal is rejected.
    seg = Segmenter(ColourOracle(), ColourOracle(grid=(8, 8), drop={BLUE}), cfg)
    result = seg.segment(img, [obj("red", RED), obj("blue", BLUE)])
    assert [i.object_id for i in result.instances] == ["red"]
    assert result.num_proposals == 2
    # A coarse model that confuses green with red: refinement with relabel fixes the label.
    coarse = ColourOracle(remap={GREEN: RED}, drop={RED})
    seg = Segmenter(coarse, ColourOracle(grid=(8, 8)), cfg.replace(relabel=True))
    result = seg.segment(img, [obj("red", RED), obj("green", GREEN)])
    assert [i.object_id for i in result.instances] == ["red"]
    assert iou(result.instances[0].mask, gt["red"]) > 0.9


class SloppyOracle(ColourOracle):
    """A coarse model that finds the object but draws it shifted and swollen, by a different
    amount in each ensemble member (so the members disagree on a rim: non-zero variance)."""

    def sample(self, feats, tf, ensemble, stage, gen):
        out = super().sample(feats, tf, ensemble, stage, gen)
        for e in range(ensemble):
            grow = 2 + 2 * e
            shifted = torch.roll(out[:, e], shifts=(6, 6), dims=(-2, -1))
            out[:, e] = F.max_pool2d(shifted, 2 * grow + 1, stride=1, padding=grow)
        return out


def test_refinement_replaces_a_sloppy_coarse_mask_and_its_variance():
    img, gt = scene()
    cfg = PipelineConfig(coarse=StageConfig(ensemble=2), refine=StageConfig(ensemble=2, augmentations=2),
                         work_size=500, **LOOSE)
    seg = Segmenter(SloppyOracle(), ColourOracle(grid=(8, 8)), cfg)
    result = seg.segment(img, [obj("red", RED), obj("blue", BLUE)], keep_coarse=True)
    coarse = {i.object_id: i for i in result.coarse_instances}
    refined = {i.object_id: i for i in result.instances}
    assert set(coarse) == set(refined) == {"red", "blue"}
    for name in gt:
        before, after = iou(coarse[name].mask, gt[name]), iou(refined[name].mask, gt[name])
        assert before < 0.8 and after > 0.9 and after > before + 0.15, (name, before, after)
        # The coarse members disagree on a wide rim; the refine members only on resampled edge pixels.
        spread_before, spread_after = coarse[name].uncertainty.sum(), refined[name].uncertainty.sum()
        assert spread_after < 0.2 * spread_before, (name, spread_before, spread_after)
        assert coarse[name].agreement < 0.95 < refined[name].agreement


def test_support_threshold_filters_unstable_instances():
    img, _ = scene()
    flaky = ColourOracle(keep_prob=0.25)
    base = PipelineConfig(coarse=StageConfig(ensemble=16), refine_enabled=False, proposal_threshold=0.0,
                          seed=3)
    few = Segmenter(flaky, config=base.replace(min_support=0.6)).segment(img, [obj("red", RED)])
    many = Segmenter(flaky, config=base.replace(min_support=0.1)).segment(img, [obj("red", RED)])
    assert few.instances == [] and len(many.instances) == 1
    assert 0.1 <= many.instances[0].coarse_confidence <= 0.6


def _member(mask, valid=None):
    m = torch.as_tensor(mask).float()
    return Member(m, torch.ones_like(m, dtype=torch.bool) if valid is None else torch.as_tensor(valid))


def test_clustering_separates_instances_of_one_object():
    a = np.zeros((40, 40)); a[2:12, 2:12] = 1
    b = np.zeros((40, 40)); b[25:38, 20:35] = 1
    members = [_member(a), _member(b), _member(a), _member(b), _member(b), _member(np.zeros((40, 40)))]
    props = cluster_members(members, 0, 0.5, 0.5, min_area=4, min_support=0.0)
    assert len(props) == 2
    assert props[0].members == 3 and props[1].members == 2  # b seen by 3 of 6, a by 2 of 6
    assert props[0].support == pytest.approx(3 / 6) and props[1].support == pytest.approx(2 / 6)
    assert torch.equal(props[0].mask(0.5), torch.as_tensor(b).bool())
    # Members whose view did not cover an instance do not vote against it.
    blind = np.zeros((40, 40), bool); blind[:, 18:] = True
    members = [_member(a), _member(a), _member(np.zeros((40, 40)), blind), _member(np.zeros((40, 40)), blind)]
    props = cluster_members(members, 0, 0.5, 0.5, min_area=4, min_support=0.0)
    assert len(props) == 1 and props[0].support == pytest.approx(1.0)


def test_overlaps_go_to_the_stronger_instance():
    p1 = torch.zeros(10, 10); p1[:, :6] = 0.9
    p2 = torch.zeros(10, 10); p2[:, 4:] = 0.8
    m1, m2 = resolve_overlaps([p1, p2], [0.9, 0.95], 0.5)
    assert not (m1 & m2).any()
    assert m1[:, :4].all() and m2[:, 6:].all()
    assert m1[:, 4:6].all()  # score x prob: 0.9 * 0.9 = 0.81 beats 0.95 * 0.8 = 0.76


def test_view_round_trip_is_identity_on_the_covered_region():
    img = torch.rand(3, 61, 97)
    for view in (full_view(61, 97, (16, 16), 14), region_view((10.3, 5.0, 50.7, 40.2), (112, 112))):
        canvas = view.render(img)
        assert canvas.shape == (3, view.canvas_h, view.canvas_w)
        back, valid = view.to_input(canvas, (61, 97))
        inner = valid.clone()
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
        err = (back - img).abs()[:, inner]
        assert err.mean() < 0.12  # resampling blur only
    fv = full_view(61, 97, (16, 16), 14)
    assert fv.canvas_w == 224 and fv.canvas_h % 14 == 0 and fv.box[0] == 0  # fits the grid, padded right/bottom
    rv = region_view((0, 0, 10, 40), (112, 224))
    assert (rv.x1 - rv.x0) / (rv.y1 - rv.y0) == pytest.approx(2.0)  # never squashes


@pytest.fixture(scope="module")
def tiny_segmenter():
    torch.manual_seed(0)
    model = OCDiT.from_config(tiny())
    cfg = PipelineConfig(coarse=StageConfig(ensemble=2), refine=StageConfig(ensemble=1, augmentations=2),
                         proposal_threshold=0.0, score_threshold=0.0, min_support=0.0)
    return Segmenter(model, config=cfg)


def _objs():
    g = torch.Generator().manual_seed(0)
    return [ObjectSpec(f"o{i}", torch.rand(4, 3, 42, 42, generator=g)) for i in range(3)]


def test_real_model_same_seed_same_result_and_cached_template_features(tiny_segmenter):
    img = (np.random.default_rng(0).random((90, 130, 3)) * 255).astype(np.uint8)
    objs = _objs()
    a = tiny_segmenter.segment(img, objs)
    b = tiny_segmenter.segment(img, objs)
    c = tiny_segmenter.segment(img, objs, config=tiny_segmenter.config.replace(seed=1))
    sig = lambda r: [(i.object_id, round(i.score, 6), int(i.mask.sum())) for i in r.instances]  # noqa: E731
    assert sig(a) == sig(b) and all(np.array_equal(x.mask, y.mask) for x, y in zip(a.instances, b.instances))
    assert sig(a) != sig(c)
    assert tiny_segmenter.coarse.cache_misses == 3  # one backbone pass per object, ever
    assert tiny_segmenter.coarse.cache_hits > 0
    assert {"features", "sampling", "coarse_total", "refine_total", "postprocess", "total"} <= set(a.timings_ms)
    for inst in a.instances:
        assert inst.mask.shape == (90, 130) and inst.mask.dtype == bool


def test_config_changes_apply_without_reloading(tiny_segmenter):
    img = np.zeros((70, 70, 3), np.uint8)
    r = tiny_segmenter.segment(img, _objs()[:1], config=tiny_segmenter.config.replace(refine_enabled=False))
    assert r.stage == "coarse"
    r = tiny_segmenter.segment(img, _objs()[:1], config=tiny_segmenter.config.replace(score_threshold=1.0))
    assert r.instances == []
    with pytest.raises(ValueError, match="coarse.ensemble=0"):
        tiny_segmenter.config.replace(**{"coarse.ensemble": 0})
    with pytest.raises(ValueError, match="unknown pipeline setting"):
        tiny_segmenter.config.replace(ensemble=3)


def test_the_full_view_grid_follows_the_models_full_view_scale_and_the_pipeline_scale():
    """A model's config says at which grid it sees whole frames best (small16: twice its 16x16);
    the pipeline's coarse_grid_scale multiplies on top. The coarse backbone gets that canvas."""
    import dataclasses

    from ocdit_ros.pipeline.mask_model import OCDiTMaskModel

    class Recording(OCDiTMaskModel):  # the real model; remembers the canvases it was given
        def image_features(self, images):
            self.canvases.append(tuple(images.shape[-2:]))
            return super().image_features(images)

    img = np.zeros((120, 160, 3), np.uint8)
    cfg = PipelineConfig(coarse=StageConfig(ensemble=1, num_steps=1), refine_enabled=False)
    canvases = {}
    for model_scale, pipeline_scale in ((1.0, 1.0), (2.0, 1.0), (2.0, 0.5)):
        torch.manual_seed(0)
        model = Recording(OCDiT.from_config(dataclasses.replace(tiny(), full_view_scale=model_scale)))
        model.canvases = []
        Segmenter(model, config=cfg.replace(coarse_grid_scale=pipeline_scale)).segment(img, _objs()[:1])
        canvases[model_scale, pipeline_scale] = model.canvases[0]
    assert canvases[1.0, 1.0] == (84, 112)  # tiny: 8x8 grid of 14 px, a 4:3 frame fills 6x8
    assert canvases[2.0, 1.0] == (168, 224)
    assert canvases[2.0, 0.5] == canvases[1.0, 1.0]
    with pytest.raises(ValueError, match="full_view_scale"):
        dataclasses.replace(tiny(), full_view_scale=10.0)


@pytest.mark.parametrize("image,match", [
    (np.zeros((10, 10, 5), np.uint8), "must be"),
    (np.zeros((1, 10, 3), np.uint8), "outside the supported range"),
    (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
    (np.zeros((10, 10, 3), np.int64), "dtype"),
    (torch.zeros(10, 10, 3), r"\(3, H, W\)"),
])
def test_bad_images_are_rejected_with_reasons(tiny_segmenter, image, match):
    with pytest.raises(ValueError, match=match):
        tiny_segmenter.segment(image, _objs())


def test_bad_objects_are_rejected_with_reasons(tiny_segmenter):
    img = np.zeros((30, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="no objects"):
        tiny_segmenter.segment(img, [])
    with pytest.raises(ValueError, match="unique"):
        tiny_segmenter.segment(img, [_objs()[0], _objs()[0]])
    with pytest.raises(ValueError, match="templates must be"):
        ObjectSpec("x", torch.zeros(0, 3, 14, 14))
    # Stages are "coarse" and "refine"; "refined" names a result, not a stage to stop after.
    with pytest.raises(ValueError, match="last_stage='refined': use one of coarse, refine"):
        tiny_segmenter.segment(img, _objs(), last_stage="refined")
    assert tiny_segmenter.segment(img, _objs(), last_stage="coarse").stage == "coarse"


def test_template_features_are_cached_on_disk_across_segmenters(tmp_path):
    torch.manual_seed(0)
    model = OCDiT.from_config(tiny())
    cfg = PipelineConfig(coarse=StageConfig(ensemble=1), refine_enabled=False)
    img = np.zeros((56, 56, 3), np.uint8)
    first = Segmenter(model, config=cfg, cache_dir=str(tmp_path))
    first.segment(img, _objs()[:2])
    assert first.coarse.cache_misses == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    second = Segmenter(model, config=cfg, cache_dir=str(tmp_path))
    second.segment(img, _objs()[:2])
    assert second.coarse.cache_misses == 0 and second.coarse.cache_hits == 2
    changed = _objs()[:1]
    changed[0].templates[0, 0, 0, 0] += 0.5  # other pixels -> other fingerprint -> recomputed
    second.segment(img, [ObjectSpec("o0", changed[0].templates)])
    assert second.coarse.cache_misses == 1


def test_several_instances_of_one_object_become_separate_instances():
    img, gt = scene()
    img[200:260, 40:100] = RED  # a second red instance
    second = np.zeros(img.shape[:2], bool)
    second[200:260, 40:100] = True
    oracle = ColourOracle(one_instance_per_member=True)
    cfg = PipelineConfig(coarse=StageConfig(ensemble=4), refine_enabled=False, work_size=500, **LOOSE)
    result = Segmenter(oracle, config=cfg).segment(img, [obj("red", RED)])
    assert [i.object_id for i in result.instances] == ["red", "red"]
    masks = sorted((i.mask for i in result.instances), key=lambda m: np.nonzero(m)[0].min())
    assert iou(masks[0], gt["red"]) > 0.9 and iou(masks[1], second) > 0.9
    assert all(i.coarse_confidence == pytest.approx(0.5, abs=0.05) for i in result.instances)  # 2 of 4 members each
    # Blind averaging would have merged them; clustering keeps the ids distinct.
    assert sorted(i.instance_id for i in result.instances) == [1, 2]


def test_per_call_max_objects_per_pass_is_honoured():
    img, gt = scene()
    oracle = ColourOracle(capacity=8)
    seg = Segmenter(oracle, config=PipelineConfig(coarse=StageConfig(ensemble=1), refine_enabled=False, **LOOSE))
    objs = [obj("red", RED), obj("blue", BLUE), obj("green", GREEN)]
    seg.segment(img, objs)
    assert oracle.calls == [(1, 3, 1)]  # one view, all objects in one pass by default
    oracle.calls.clear()
    result = seg.segment(img, objs, config=seg.config.replace(max_objects_per_pass=1))
    # The per-call setting, not the constructor's: one object per pass, the three passes batched.
    assert oracle.calls == [(3, 1, 1)]
    check_instances(result, gt)


class Archived:
    """A template-archive-like object (id + to_tensor()) that counts its conversions."""

    def __init__(self, name, colour):
        self.id, self.colour, self.converted = name, colour, 0

    def to_tensor(self):
        self.converted += 1
        return torch.tensor(self.colour).reshape(1, 3, 1, 1).expand(3, 3, 14, 14).clone()


def test_objects_are_converted_once_across_frames():
    img, gt = scene()
    seg = Segmenter(ColourOracle(), config=PipelineConfig(coarse=StageConfig(ensemble=1), refine_enabled=False,
                                                          **LOOSE))
    objs = [Archived("red", RED), Archived("blue", BLUE)]
    for _ in range(3):
        check_instances(seg.segment(img, objs), gt)
    assert [o.converted for o in objs] == [1, 1] and seg.specs.conversions == 2
    fresh = [Archived("red", RED), objs[1]]  # a new object is converted, the kept one is not
    seg.segment(img, fresh)
    assert fresh[0].converted == 1 and objs[1].converted == 1


def test_a_partial_stage_in_a_config_keeps_that_stages_defaults(tmp_path):
    """`refine: {num_steps: 3}` changes the steps only; it once replaced the stage with StageConfig's
    bare defaults (4 members x 1 crop instead of the refine stage's 2 x 3)."""
    path = tmp_path / "p.yaml"
    path.write_text("refine:\n  num_steps: 3\ncoarse:\n  rho: 7.0\n")
    cfg, default = PipelineConfig.from_yaml(path), PipelineConfig()
    assert cfg.refine == StageConfig(**{**default.refine.__dict__, "num_steps": 3})
    assert cfg.coarse == StageConfig(**{**default.coarse.__dict__, "rho": 7.0})
    assert default.replace(**{"refine.num_steps": 3}).refine == cfg.refine
