"""Weights record how their training templates were rendered; templates of new objects follow it."""

import json
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from ocdit_ros.cli import main
from ocdit_ros.model import OCDiT, load_model, save_pretrained, tiny
from ocdit_ros.model.config import OCDiTConfig
from ocdit_ros.model.weights import template_render_from_file
from ocdit_ros.pipeline.segmenter import Segmenter
from ocdit_ros.templates.render import RenderSettings
from ocdit_ros.training import TrainConfig, Trainer

from handmade_data import write_scene, write_templates

SETTINGS = RenderSettings(views=12, template_size=42, render_size=128, margin=0.1, renderer="raster")


def _trainer(tmp_path, templates) -> Trainer:
    split = write_scene(tmp_path, np.random.default_rng(0))
    cfg = TrainConfig(stage="coarse", model="tiny", data=[str(split)], templates=str(templates),
                      out=str(tmp_path / "run"), batch_size=2, steps=1, warmup_steps=1, num_workers=0,
                      objects_per_image=2, templates_per_object=3, log_every=1)
    return Trainer(cfg, quiet=True)


def test_exported_weights_carry_the_templates_render_settings_and_new_templates_follow_them(tmp_path, capsys):
    write_templates(tmp_path / "templates", render_settings=SETTINGS.to_dict())
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, tmp_path / "templates")
    trainer.fit()
    path = trainer.export()
    assert template_render_from_file(path) == SETTINGS.to_dict()
    model = load_model(path)
    assert model.template_render == SETTINGS.to_dict()
    assert Segmenter(model).template_settings() == SETTINGS
    save_pretrained(model, tmp_path / "folder")  # the hub layout keeps it too
    assert load_model(tmp_path / "folder").template_render == SETTINGS.to_dict()

    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    box.export(tmp_path / "box.ply")
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "new"),
                 "--weights", str(path)]) == 0
    meta = json.loads((tmp_path / "new" / "box.json").read_text())
    assert meta["render_settings"] == SETTINGS.to_dict() and meta["num_views"] == 12
    # An option given on top changes only that setting (a new size brings the render size of its rule).
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "big"),
                 "--weights", str(path), "--size", "56"]) == 0
    meta = json.loads((tmp_path / "big" / "box.json").read_text())["render_settings"]
    assert (meta["template_size"], meta["render_size"], meta["views"], meta["margin"]) == (56, 168, 12, 0.1)
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "x"),
                 "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_templates_rendered_two_ways_are_refused_for_training(tmp_path):
    write_templates(tmp_path / "templates", objects=(1, 2), render_settings=SETTINGS.to_dict())
    write_templates(tmp_path / "templates", objects=(3, 4), render_settings=RenderSettings.training(42).to_dict())
    with pytest.raises(ValueError, match="different settings"):
        _trainer(tmp_path, tmp_path / "templates")


def test_weights_without_a_record_use_the_training_rule_at_their_template_size():
    model = OCDiT.from_config(tiny())
    assert model.template_render is None
    assert RenderSettings.for_model(model) == RenderSettings.training(model.config.template_size[0])
    assert RenderSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    with pytest.raises(ValueError, match="unknown render settings"):
        RenderSettings.from_dict(dict(SETTINGS.to_dict(), sharpness=2))
    # The official size, 128 px with 14 px patches, renders at the 126 px the backbone sees.
    official = SimpleNamespace(config=OCDiTConfig(template_size=(128, 128)), template_render=None)
    assert RenderSettings.for_model(official).template_size == 126


@pytest.mark.parametrize("record,message", [
    ([42, 126], "must be a mapping"),
    ({"views": "42"}, "views='42': must be int"),
    ({"views": 4.5}, "must be int"),
    ({"margin": True}, "margin=True: must be float"),
    ({"light_dir_cam": [1, 0]}, "must be 3 numbers"),
    ({"renderer": 3}, "renderer=3: must be str"),
])
def test_a_broken_render_record_is_a_value_error_naming_the_setting(record, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RenderSettings.from_dict(record)
    model = OCDiT.from_config(tiny())
    model.template_render = record
    with pytest.raises(ValueError, match="weights' template render record is unusable"):
        Segmenter(model).template_settings()
    assert RenderSettings.from_dict({"views": 12.0, "margin": 0}) == RenderSettings(views=12, margin=0.0)


def test_pybullet_settings_fall_back_to_the_rasteriser_with_a_note_when_pybullet_is_missing(monkeypatch):
    settings = RenderSettings.training(48)
    assert settings.runnable() == (settings, None)  # installed here
    monkeypatch.setitem(sys.modules, "pybullet", None)  # import pybullet now raises ImportError
    fallback, note = settings.runnable()
    assert fallback.renderer == "raster" and fallback.template_size == 48 and "pybullet" in note
    with pytest.raises(ValueError, match="needs pybullet, which is not installed"):
        settings.installed()  # asked for by name: refused, not swapped
    assert fallback.installed() == fallback


def test_a_renderer_asked_for_by_name_but_missing_is_one_line(tmp_path, capsys, monkeypatch):
    trimesh.creation.box(extents=(0.1, 0.06, 0.04)).export(tmp_path / "box.ply")
    monkeypatch.setitem(sys.modules, "pybullet", None)
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "t"),
                 "--renderer", "pybullet", "--views", "12", "--size", "42"]) == 2
    assert "ocdit templates: error: the pybullet renderer needs pybullet" in capsys.readouterr().err
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "t"),
                 "--views", "12", "--size", "42"]) == 0  # the shipped weights' pybullet: swapped, with a warning
    assert "warning: templates for this model are rendered with pybullet" in capsys.readouterr().err
    assert json.loads((tmp_path / "t" / "box.json").read_text())["render_settings"]["renderer"] == "raster"
