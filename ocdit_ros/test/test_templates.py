"""Template rendering from real (generated) meshes, archives and the render cache."""

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from ocdit_ros.templates import (ArchiveError, MeshError, RenderSettings, load_archive, load_bop_models, load_mesh,
                                 load_template_dir, render_or_load, render_templates)
from ocdit_ros.templates.render import look_at, view_directions


def two_colour_box(path, extents=(0.1, 0.06, 0.04)):
    """A box whose +x face is red and the rest blue, as a PLY with face colours."""
    box = trimesh.creation.box(extents=extents)
    fc = np.tile([30, 30, 220, 255], (len(box.faces), 1))
    fc[box.face_normals[:, 0] > 0.5] = [220, 30, 30, 255]
    box.visual.face_colors = fc
    box.export(path)
    return path


def textured_obj(folder):
    """An OBJ + MTL + PNG texture: a box textured half green (u < 0.5), half yellow."""
    box = trimesh.creation.box(extents=(0.08, 0.08, 0.08))
    mesh = box.unmerge_vertices() or box
    mesh = trimesh.Trimesh(box.vertices[box.faces].reshape(-1, 3), np.arange(len(box.faces) * 3).reshape(-1, 3),
                           process=False)
    uv = np.tile([[0.25, 0.5], [0.25, 0.6], [0.3, 0.5]], (len(box.faces), 1))
    uv[np.repeat(box.face_normals[:, 2] > 0.5, 3)] = [0.75, 0.5]  # top face samples the right half
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:, :4] = [20, 200, 20]
    tex[:, 4:] = [230, 230, 20]
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex))
    path = folder / "cube.obj"
    mesh.export(path)
    return path


def multi_material_obj(folder):
    """Two parts with different MTL diffuse colours in one OBJ."""
    a = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
    b = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
    b.apply_translation([0.06, 0, 0])
    a.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.SimpleMaterial(diffuse=[255, 0, 0, 255]))
    b.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.SimpleMaterial(diffuse=[0, 0, 255, 255]))
    path = folder / "pair.obj"
    trimesh.Scene([a, b]).export(path)
    return path


FAST = RenderSettings(views=12, template_size=70, render_size=128)


def test_views_are_cropped_tight_and_coloured_by_material(tmp_path):
    mesh = load_mesh(two_colour_box(tmp_path / "box.ply"))
    assert mesh.diameter == pytest.approx(np.linalg.norm([0.1, 0.06, 0.04]), rel=1e-6)
    views = render_templates(mesh, FAST)
    assert views.rgb.shape == (12, 70, 70, 3) and views.masks.shape == (12, 70, 70)
    for m in views.masks:
        ys, xs = np.nonzero(m)
        assert len(xs) > 200
        # The longer side of the mask spans the crop minus the margin on both sides.
        span = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        assert 70 / (1 + 2 * FAST.margin) - 3 <= span <= 70
    # The camera on +x looks at the red face: its pixels are red; from -x none are.
    dirs = view_directions(12)
    rgb_px = views.rgb[np.argmax(dirs[:, 0])][views.masks[np.argmax(dirs[:, 0])]].astype(int)
    assert ((rgb_px[:, 0] > 2 * rgb_px[:, 2]).mean()) > 0.3  # the view is oblique: other faces show too
    rgb_nx = views.rgb[np.argmin(dirs[:, 0])][views.masks[np.argmin(dirs[:, 0])]].astype(int)
    assert (rgb_nx[:, 2] > rgb_nx[:, 0]).all()
    grown = views.masks.copy()  # black background beyond the 1-px resampling seam of the mask
    for axis in (1, 2):
        grown |= np.roll(views.masks, 1, axis) | np.roll(views.masks, -1, axis)
    assert views.rgb[~grown].max() < 16


def test_multi_material_obj_and_textures(tmp_path):
    pair = render_templates(load_mesh(multi_material_obj(tmp_path)), FAST)
    px = pair.rgb[pair.masks].astype(int)
    assert (px[:, 0] > 3 * px[:, 2] + 10).mean() > 0.2 and (px[:, 2] > 3 * px[:, 0] + 10).mean() > 0.2
    cube = load_mesh(textured_obj(tmp_path))
    assert cube.parts[0].texture is not None
    views = render_templates(cube, FAST)
    top = np.argmax(view_directions(12)[:, 2])
    px = views.rgb[top][views.masks[top]].astype(int)
    assert (px[:, 0] > 100).mean() > 0.5 and (px[:, 1] > 100).mean() > 0.5 and (px[:, 2] < 60).mean() > 0.9  # yellow
    side = np.argmax(view_directions(12)[:, 0])
    px = views.rgb[side][views.masks[side]].astype(int)
    assert ((px[:, 1] > 2 * px[:, 0]) & (px[:, 1] > 2 * px[:, 2])).mean() > 0.5  # green sides


def test_poses_are_rotations_looking_at_the_object():
    for d in list(view_directions(42)) + [np.array([0, 0, 1.0]), np.array([0, 0, -1.0])]:
        R, t = look_at(d * 0.5)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(R @ np.zeros(3) + t, [0, 0, 0.5])  # the object centre is straight ahead
    assert len(view_directions(42)) == 42 and len(view_directions(30)) == 30


def test_bop_millimetres_match_metres(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    box = trimesh.creation.box(extents=(100.0, 60.0, 40.0))  # millimetres
    box.visual.vertex_colors = np.tile([200, 120, 40, 255], (len(box.vertices), 1))
    box.export(models / "obj_000003.ply")
    (models / "models_info.json").write_text(json.dumps({"3": {"diameter": 123.3}}))
    (bop,) = load_bop_models(models)
    metres = load_mesh(two_colour_box(tmp_path / "m.ply"))
    assert bop.name == "obj_000003" and bop.scale_to_m == 0.001
    assert bop.diameter == pytest.approx(metres.diameter, rel=1e-6)
    a, b = render_templates(bop, FAST), render_templates(metres, FAST)
    assert np.array_equal(a.masks, b.masks)
    with pytest.raises(MeshError, match="models_info.json is missing"):
        load_bop_models(tmp_path)


def test_archive_round_trip_cache_and_invalidation(tmp_path):
    mesh_path = two_colour_box(tmp_path / "box.ply")
    out = tmp_path / "tpl"
    tpl, hit = render_or_load(mesh_path, out, FAST)
    assert not hit and tpl.id == "box" and tpl.rgb.shape == (12, 70, 70, 3)
    again, hit = render_or_load(mesh_path, out, FAST)
    assert hit and np.array_equal(again.rgb, tpl.rgb)
    _, hit = render_or_load(mesh_path, out, RenderSettings(views=12, template_size=42, render_size=128))
    assert not hit  # settings changed
    two_colour_box(mesh_path, extents=(0.1, 0.05, 0.04))
    changed, hit = render_or_load(mesh_path, out, RenderSettings(views=12, template_size=42, render_size=128))
    assert not hit and changed.meta["mesh_sha256"] != again.meta["mesh_sha256"]
    loaded = load_template_dir(out)
    assert [t.id for t in loaded] == ["box"]
    t = loaded[0].to_tensor()
    assert t.shape == (12, 3, 42, 42) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert loaded[0].poses["rotations"].shape == (12, 3, 3) and loaded[0].poses["K"].shape == (3, 3)


def test_archives_never_unpickle_and_bad_files_are_explained(tmp_path):
    np.savez(tmp_path / "evil.npz", rgb=np.array([object()], dtype=object))
    (tmp_path / "evil.json").write_text("{}")
    with pytest.raises(ArchiveError, match="corrupt|lacks"):
        load_archive(tmp_path / "evil.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ArchiveError, match="corrupt"):
        load_archive(tmp_path / "junk.npz")
    (tmp_path / "alone.npz").write_bytes(b"")
    with pytest.raises(ArchiveError, match="no metadata"):
        load_archive(tmp_path / "alone.npz")
    with pytest.raises(MeshError, match="does not exist"):
        load_mesh(tmp_path / "missing.obj")
    (tmp_path / "x.fbx").write_text("")
    with pytest.raises(MeshError, match="unsupported format"):
        load_mesh(tmp_path / "x.fbx")
    with pytest.raises(ValueError, match="at least 8 px"):
        RenderSettings(template_size=6).validate()
    RenderSettings(template_size=48).validate()  # 8 px patches (the default model) are fine


def test_pybullet_renderer_matches_the_numpy_renderer(tmp_path):
    """Same views, distance and crops: the TinyRenderer masks agree with the z-buffer's."""
    pytest.importorskip("pybullet")
    mesh = trimesh.creation.box(extents=(0.12, 0.05, 0.03))
    mesh.visual.face_colors = np.tile([30, 160, 220, 255], (len(mesh.faces), 1))
    mesh.export(tmp_path / "box.ply")
    raster, _ = render_or_load(tmp_path / "box.ply", tmp_path / "r", RenderSettings(views=12, template_size=42,
                                                                                    render_size=128))
    pyb, hit = render_or_load(tmp_path / "box.ply", tmp_path / "p",
                              RenderSettings(views=12, template_size=42, render_size=128, renderer="pybullet"))
    assert not hit and pyb.meta["renderer"] == "pybullet TinyRenderer"
    assert pyb.rgb.shape == raster.rgb.shape == (12, 42, 42, 3)
    inter = (pyb.masks & raster.masks).sum((1, 2))
    union = (pyb.masks | raster.masks).sum((1, 2))
    assert (inter / union).min() > 0.85
    assert np.abs(pyb.rgb[pyb.masks].mean(0) - raster.rgb[raster.masks].mean(0)).max() < 60  # same colour
    assert pyb.rgb[~pyb.masks].mean() < 8  # black background (up to resampled edges), as the NumPy renderer
    again, hit = render_or_load(tmp_path / "box.ply", tmp_path / "p",
                                RenderSettings(views=12, template_size=42, render_size=128, renderer="pybullet"))
    assert hit and np.array_equal(again.rgb, pyb.rgb)


@pytest.mark.parametrize("renderer", ["raster", "pybullet"])
def test_flat_objects_seen_edge_on_still_render(tmp_path, renderer):
    """A ruler-like sheet covers no pixel centre when seen exactly edge-on; the view is tilted."""
    if renderer == "pybullet":
        pytest.importorskip("pybullet")
    trimesh.creation.box(extents=(0.3, 0.03, 0.0015)).export(tmp_path / "ruler.ply")
    tpl, _ = render_or_load(tmp_path / "ruler.ply", tmp_path / "t",
                            RenderSettings(views=42, template_size=42, render_size=128, renderer=renderer))
    assert tpl.rgb.shape[0] == 42
