"""Training: every stage learns a fixed batch, checkpoints resume bit-exactly, DDP (gloo) == one process."""

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from ocdit_ros.model import load_model, tiny
from ocdit_ros.training import TrainConfig, Trainer, lr_factor
from ocdit_ros.training.examples import ExampleSource, index_split, load_template_bank

from handmade_data import write_scene as _write_scene, write_templates as _write_templates


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    split = _write_scene(root, np.random.default_rng(0))
    _write_templates(root / "templates")
    return split, root / "templates"


def _cfg(stage, data, tmp_path, **kw) -> TrainConfig:
    split, templates = data
    base = dict(stage=stage, model="tiny", data=[str(split)], templates=str(templates), out=str(tmp_path / stage),
                batch_size=2, steps=4, warmup_steps=1, lr=2e-3, num_workers=0, objects_per_image=2,
                templates_per_object=3, checkpoint_every=2, log_every=1, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def test_examples_have_the_model_shapes_and_depend_only_on_the_index(data, tmp_path):
    cfg = _cfg("coarse", data, tmp_path)
    model_cfg = tiny()
    from ocdit_ros.training.examples import load_template_bank

    src = ExampleSource(cfg, model_cfg, load_template_bank(cfg.templates))
    s = src.example(7)
    assert s["images"].shape == (3, 112, 112) and 0 <= s["images"].min() and s["images"].max() <= 1
    assert s["templates"].shape == (2, 3, 3, 42, 42)
    assert s["masks"].shape == (2, 128, 128) and set(s["masks"].unique().tolist()) <= {0.0, 1.0}
    assert s["noise"].shape == s["posterior_eps"].shape == (2, 4, 8, 8)
    again = src.example(7)
    assert all(torch.equal(s[k], again[k]) for k in s)
    assert not torch.equal(src.example(8)["noise"], s["noise"])
    # The query whose mask is non-empty shows its object: the crop's pixels under the mask have
    # the template's colour (the red/green/blue rectangles), so queries and targets line up.
    for n in range(2):
        m = s["masks"][n] > 0
        if m.sum() > 30:
            small = torch.nn.functional.interpolate(m[None, None].float(), size=(112, 112))[0, 0] > 0.5
            pix = s["images"][:, small].mean(1)
            tpl = s["templates"][n, 0][:, 21, 21]
            assert torch.argmax(pix) == torch.argmax(tpl)


def test_refine_examples_include_false_positive_crops(data, tmp_path):
    from ocdit_ros.training.examples import load_template_bank

    cfg = _cfg("refine", data, tmp_path, false_positive_rate=0.5)
    src = ExampleSource(cfg, tiny(), load_template_bank(cfg.templates))
    masks = [src.example(i)["masks"] for i in range(30)]
    assert all(m.shape == (1, 128, 128) for m in masks)
    empty = sum(int(m.sum() == 0) for m in masks)
    assert 5 <= empty <= 25  # about half ask for an absent object


def test_index_split_skips_faint_instances(tmp_path):
    split = _write_scene(tmp_path, np.random.default_rng(1))
    info = json.loads((split / "000000" / "scene_gt_info.json").read_text())
    info["0"][0]["visib_fract"] = 0.05
    (split / "000000" / "scene_gt_info.json").write_text(json.dumps(info))
    images = index_split(split, visib_threshold=0.1)
    assert len(images) == 3 and len(images[0].instances) == 2 and len(images[1].instances) == 3
    with pytest.raises(FileNotFoundError, match="ocdit data scenes"):
        index_split(tmp_path / "nothing")


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(data=["x"], steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] > f[50] > f[99] >= 0.1


@pytest.mark.parametrize("stage", ["vae", "coarse", "refine"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(stage, data, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(_cfg(stage, data, tmp_path, lr=3e-3, warmup_steps=1, steps=1000), quiet=True)
    batch = next(iter(trainer.loader(1)))
    # Same noise every step, so the loss measures fitting, not luck of the draw.
    first = trainer.wrapped(**batch)["loss"].item()
    for _ in range(25):
        trainer.train_step(batch)
    last = trainer.wrapped(**batch)["loss"].item()
    assert last < first * 0.9, (first, last)


def test_resume_from_a_checkpoint_is_bit_identical(data, tmp_path):
    torch.manual_seed(0)
    a = Trainer(_cfg("coarse", data, tmp_path / "a", steps=4, checkpoint_every=2), quiet=True)
    a.fit()
    b = Trainer(_cfg("coarse", data, tmp_path / "b", steps=4), quiet=True)
    b.load_checkpoint(tmp_path / "a" / "coarse" / "checkpoint_0000002.pt")
    assert b.step == 2
    b.fit()
    for (k, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), k
    assert all(torch.equal(a.ema.shadow[k], b.ema.shadow[k]) for k in a.ema.shadow)
    log = [json.loads(line) for line in (tmp_path / "a" / "coarse" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    pytest.importorskip("tensorboard")
    assert list((tmp_path / "a" / "coarse" / "tensorboard").glob("events.out.tfevents.*"))


def test_export_writes_ema_weights_that_load_and_segment(data, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(_cfg("vae", data, tmp_path, steps=2), quiet=True)
    trainer.fit()
    path = trainer.export()
    model = load_model(path)
    assert model.config.vae.raw_std != 1.0  # latents standardised from the trained encoder
    assert model.vae.scale == pytest.approx(model.config.vae.final_std / model.config.vae.raw_std)
    coarse = Trainer(_cfg("coarse", data, tmp_path, steps=1, init=str(path)), quiet=True)
    trained = model.vae.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in coarse.model.vae.state_dict().items())
    assert coarse.model.vae.scale == model.vae.scale
    assert not any(p.requires_grad for p in coarse.model.vae.parameters())


def test_export_holds_the_ema_weights_not_the_live_ones(data, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    trainer = Trainer(_cfg("coarse", data, tmp_path, steps=3, ema_decay=0.5), quiet=True)
    trainer.fit()
    live = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    exported = load_file(str(trainer.export()))
    shadow = trainer.ema.shadow
    assert shadow and set(shadow) <= set(exported)
    differs = [k for k in shadow if not torch.equal(shadow[k], live[k])]
    assert differs  # after 3 steps the average and the live weights are apart, so the check can fail
    for k in shadow:
        assert torch.equal(exported[k], shadow[k].cpu()), k
    frozen = [k for k in live if k not in shadow and k in exported]
    assert frozen and all(torch.equal(exported[k], live[k]) for k in frozen)  # frozen parts as they are
    assert all(torch.equal(v, live[k]) for k, v in trainer.model.state_dict().items())  # training untouched


def test_backbone_init_replaces_the_backbone_and_keeps_it_frozen(data, tmp_path):
    from ocdit_ros.model import OCDiT, small16
    from ocdit_ros.model.weights import save_weights

    torch.manual_seed(0)
    vae = Trainer(_cfg("vae", data, tmp_path, steps=1), quiet=True)
    vae.fit()
    init = vae.export()
    torch.manual_seed(5)
    other = OCDiT.from_config(tiny())
    save_weights(other, tmp_path / "backbone.safetensors")
    trainer = Trainer(_cfg("coarse", data, tmp_path, steps=2, init=str(init),
                           backbone_init=str(tmp_path / "backbone.safetensors")), quiet=True)
    want = other.feature_extractor.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in trainer.model.feature_extractor.state_dict().items())
    assert not any(p.requires_grad for p in trainer.model.feature_extractor.parameters())
    diffuser = {k: v.clone() for k, v in trainer.model.diffuser.state_dict().items()}
    trainer.fit()
    assert all(torch.equal(v, want[k]) for k, v in trainer.model.feature_extractor.state_dict().items())
    assert any(not torch.equal(v, diffuser[k]) for k, v in trainer.model.diffuser.state_dict().items())
    exported = load_model(trainer.export())
    assert exported.config.backbone.trainable is False
    assert all(torch.equal(v, want[k]) for k, v in exported.feature_extractor.state_dict().items())
    save_weights(OCDiT.from_config(small16()), tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        Trainer(_cfg("coarse", data, tmp_path / "w", steps=1, init=str(init),
                     backbone_init=str(tmp_path / "wrong.safetensors")), quiet=True)


@pytest.mark.parametrize("law", ["uniform", "normal"])
def test_training_loss_equals_the_fixture_checked_diffuser_loss(law):
    """DiffusionLoss (what `ocdit train` optimises) == OCDiT.forward_loss, whose Diffuser.forward_loss
    the official fixture checks, for the same posterior, sigma and noise draws."""
    from ocdit_ros.model import OCDiT
    from ocdit_ros.training.losses import DiffusionLoss

    cfg = tiny()
    cfg.diffuser = dataclasses.replace(cfg.diffuser, sigma_distribution=law)
    torch.manual_seed(3)
    model = OCDiT.from_config(cfg).eval()
    with torch.no_grad():  # non-trivial weights everywhere (some start at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b, n = 2, 3
    g = torch.Generator().manual_seed(4)
    images = torch.rand(b, 3, 112, 112, generator=g)
    templates = torch.rand(b, n, 2, 3, 42, 42, generator=g)
    masks = (torch.rand(b, n, 128, 128, generator=g) > 0.5).float()

    torch.manual_seed(21)
    ref = model.forward_loss(images, templates, masks)
    # The same draws, in the order forward_loss makes them: posterior eps, sigma, noise.
    torch.manual_seed(21)
    eps = torch.randn(b * n, 4, 8, 8).reshape(b, n, 4, 8, 8)
    if law == "uniform":
        u = torch.rand(b)  # forward_loss draws sigma as edm.sigma_from_uniform(rand), the one law
    else:
        u = torch.special.ndtr(torch.randn(b))
    noise = torch.randn(b, n, 4, 8, 8)
    with torch.no_grad():
        out = DiffusionLoss(model)(images, templates, masks, eps, noise, u)
    assert out["loss"].item() == pytest.approx(ref["loss"].mean().item(), rel=1e-5)
    assert out["mse"].item() == pytest.approx(ref["loss_masks"].mean().item(), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.manual_seed(0)
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(cfg_dict), device="cpu", quiet=True)
    batch = next(iter(trainer.loader(1)))
    trainer.wrapped(**batch)["loss"].backward()
    if rank == 0:
        torch.save({k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}, out)
    # Both ranks leave together: a rank that tears gloo down while the other still talks aborts.
    torch.distributed.barrier()
    del trainer
    torch.distributed.destroy_process_group()


def test_ddp_on_gloo_matches_single_process_gradient(data, tmp_path):
    import torch.multiprocessing as mp

    # "first" class positions: the random-interval draw is per process, so it would differ by design.
    model_yaml = tmp_path / "model.yaml"
    cfg_model = tiny()
    cfg_model.diffuser = dataclasses.replace(cfg_model.diffuser, class_pe_training="first")
    cfg_model.to_yaml(model_yaml)
    cfg = _cfg("coarse", data, tmp_path, model=str(model_yaml), batch_size=2)
    out = tmp_path / "ddp_grads.pt"
    mp.start_processes(_ddp_rank, args=(2, _free_port(), cfg.to_dict(), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    ddp = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    single = Trainer(_cfg("coarse", data, tmp_path, model=str(model_yaml), batch_size=4), device="cpu", quiet=True)
    batch = next(iter(single.loader(1)))
    single.wrapped(**batch)["loss"].backward()
    grads = {k: p.grad for k, p in single.model.named_parameters() if p.grad is not None}
    assert set(grads) == set(ddp)
    for k in grads:
        diff = (ddp[k] - grads[k]).abs().max().item()
        assert diff <= 1e-4 * grads[k].abs().max().item() + 1e-7, (k, diff, grads[k].abs().max().item())


def test_cli_train_resumes_from_the_newest_checkpoint_and_restart_starts_over(data, tmp_path, capsys):
    import yaml
    from safetensors.torch import load_file

    from ocdit_ros.cli import main

    # Constant learning rate: the schedule does not depend on --steps, so 4 + 2 steps == 6 steps.
    cfg = _cfg("coarse", data, tmp_path, steps=6, warmup_steps=0, min_lr_ratio=1.0, checkpoint_every=2)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))

    def train(out, steps, *extra):
        code = main(["train", "coarse", "--config", str(config), "--out", str(out), "--steps", str(steps),
                     "--device", "cpu", *extra])
        return code, capsys.readouterr().err

    def logged_steps(out):
        return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(whole, 6)[0] == 0
    code, err = train(parts, 4)
    assert code == 0 and "resuming" not in err
    assert sorted(p.name for p in parts.glob("checkpoint_*.pt")) == ["checkpoint_0000002.pt", "checkpoint_0000004.pt"]
    code, err = train(parts, 6)  # a second run in the same --out continues from step 4, not 2 or 0
    assert code == 0 and f"resuming from {parts / 'checkpoint_0000004.pt'} (step 4)" in err
    assert logged_steps(parts) == [1, 2, 3, 4, 5, 6]
    ref = load_file(str(whole / "model.safetensors"))
    got = load_file(str(parts / "model.safetensors"))
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)  # == one uninterrupted run

    code, err = train(parts, 6)  # nothing left to do: exports again without training
    assert code == 0 and "(step 6)" in err and logged_steps(parts) == [1, 2, 3, 4, 5, 6]
    code, err = train(parts, 6, "--restart")  # ignores the checkpoints: trains all 6 steps again
    assert code == 0 and "resuming" not in err
    assert logged_steps(parts) == [1, 2, 3, 4, 5, 6] * 2
    again = load_file(str(parts / "model.safetensors"))
    assert all(torch.equal(again[k], ref[k]) for k in ref)  # same seed from scratch: same weights


def test_cli_stop_at_ends_early_on_the_full_schedule_and_the_run_continues(data, tmp_path, capsys):
    import yaml
    from safetensors.torch import load_file

    from ocdit_ros.cli import main

    # A decaying schedule: stopping at 3 of 6 must not compress the schedule into 3 steps.
    cfg = _cfg("coarse", data, tmp_path, steps=6, warmup_steps=1, checkpoint_every=10)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))

    def train(out, *extra):
        assert main(["train", "coarse", "--config", str(config), "--out", str(out), "--device", "cpu", *extra]) == 0
        capsys.readouterr()
        return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]

    whole = train(tmp_path / "whole")
    first = train(tmp_path / "parts", "--stop-at", "3")
    assert [r["step"] for r in first] == [1, 2, 3]
    assert (tmp_path / "parts" / "last_checkpoint.txt").read_text() == "checkpoint_0000003.pt"
    assert [r["lr"] for r in first] == [r["lr"] for r in whole[:3]]
    both = train(tmp_path / "parts")  # continues to --steps from the checkpoint at 3
    assert [r["step"] for r in both] == [1, 2, 3, 4, 5, 6]
    ref = load_file(str(tmp_path / "whole" / "model.safetensors"))
    got = load_file(str(tmp_path / "parts" / "model.safetensors"))
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    from ocdit_ros.cli import main

    code = main(["train", "coarse", "--data", str(tmp_path / "none"), "--templates", str(tmp_path),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "ocdit data scenes" in err and "\n" not in err
    (tmp_path / "bad.yaml").write_text("stage: coarse\nlearning_rate: 1\n")
    assert main(["train", "coarse", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_sigma_laws_from_uniform_draws():
    from ocdit_ros.model.edm import sigma_from_uniform

    half = torch.tensor([0.5])
    assert sigma_from_uniform(half, "uniform", -0.4, 1.2).item() == pytest.approx((0.002 * 80) ** 0.5, rel=1e-5)
    assert sigma_from_uniform(half, "normal", -0.4, 1.2).item() == pytest.approx(np.exp(-0.4), rel=1e-5)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    s = sigma_from_uniform(u, "normal_trunc", -0.4, 3.0)
    assert s.min() >= 0.002 - 1e-6 and s.max() <= 80 + 1e-4
    logs = sigma_from_uniform(u, "normal", -0.4, 1.2).log()
    assert logs.mean().item() == pytest.approx(-0.4, abs=0.03) and logs.std().item() == pytest.approx(1.2, abs=0.03)
    with pytest.raises(ValueError, match="unknown sigma distribution"):
        sigma_from_uniform(half, "cosine", 0, 1)


# --- backbone pretraining by template matching (the trainer's backbone stage) -------------------

def test_patch_labels_take_the_object_covering_more_than_half_a_patch():
    from ocdit_ros.training.examples import patch_labels

    a = np.zeros((16, 16), bool)
    a[:8, :8] = True  # patch (0, 0) whole
    a[8:11, 8:16] = True  # patch (1, 1): 24 of 64 pixels, not enough
    b = np.zeros((16, 16), bool)
    b[:, 8:] = True
    b[8:11, 8:16] = False
    labels = patch_labels([a, b], [3, 5], 8)
    assert labels.tolist() == [[3, 5], [-1, 5]]  # (1, 1): b keeps 40 of 64 pixels


def test_backbone_pretraining_learns_to_match_templates_and_writes_a_frozen_backbone(data, tmp_path):
    from ocdit_ros.model import OCDiT
    from ocdit_ros.training.losses import MatchingLoss

    cfg = _cfg("backbone", data, tmp_path, steps=40, lr=2e-3, templates_per_object=2, recolour_prob=0.0,
               colour_jitter=0.0, crop_scale=(0.9, 1.0), log_every=10, checkpoint_every=20, warmup_steps=4,
               ema_decay=0.5)
    torch.manual_seed(0)
    untrained = OCDiT.from_config(tiny()).feature_extractor.model
    trainer = Trainer(cfg, quiet=True)
    assert {n.split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad} == {"feature_extractor"}
    trainer.fit()
    path = trainer.export()
    rows = [json.loads(line) for line in (tmp_path / "backbone" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert (tmp_path / "backbone" / "checkpoint_0000040.pt").is_file()  # the trainer's checkpoints
    model = load_model(path)
    assert model.config.backbone.trainable is False  # later stages start from it frozen
    # Fresh crops: the trained ViT puts each object's patches nearest its own templates.
    src = ExampleSource(dataclasses.replace(cfg, seed=99), model.config, trainer.source.templates)
    batch = [src.example(i) for i in range(4)]
    with torch.no_grad():
        acc = MatchingLoss(model.feature_extractor.model, model.config.backbone.patch_size, 0.1)(batch)["train_acc"]
    assert acc >= 0.9
    trained = model.feature_extractor.model.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in untrained.state_dict().items() if k != "mask_token")


class _MeanColour(torch.nn.Module):
    """A fixed 'ViT' whose patch token is the patch's mean colour: the loss can be worked by hand."""

    def patch_tokens(self, x):
        return torch.nn.functional.avg_pool2d(x * 0.5 + 0.5, 4).flatten(2).transpose(1, 2)


def test_matching_loss_leaves_the_same_object_in_another_image_out():
    from ocdit_ros.training.losses import MatchingLoss

    red, green, blue = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0])

    def item(left, right, ids):
        img = torch.zeros(3, 4, 8)
        img[:, :, :4], img[:, :, 4:] = left[:, None, None], right[:, None, None]
        tpl = torch.stack([c[:, None, None].expand(3, 4, 4) for c in (left, right)])[:, None]  # (2, 1, 3, 4, 4)
        return {"image": img, "labels": torch.tensor([[0, 1]]), "obj_ids": ids, "templates": tpl}

    # Object 1 is red in both images; image 1 also holds a blue-green object 3.
    batch = [item(red, green, [1, 2]), item(red, 0.6 * green + 0.8 * blue, [1, 3])]
    out = MatchingLoss(_MeanColour(), 4, 0.5)(batch)
    loss, acc = out["loss"], float(out["train_acc"])
    protos = torch.nn.functional.normalize(torch.stack([red, green, red, 0.6 * green + 0.8 * blue]), dim=1)
    feats = protos  # each patch is exactly its object's colour
    logits = feats @ protos.T / 0.5
    blocked = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.nn.functional.cross_entropy(logits.masked_fill(blocked, float("-inf")), torch.arange(4))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and acc == 1.0
    unblocked = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert float(loss) < float(unblocked) - 0.1  # the duplicate would have counted as a hard negative


def test_cli_train_backbone_errors_in_one_line(tmp_path, capsys):
    from ocdit_ros.cli import main

    code = main(["train", "backbone", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--data" in err and "--templates" in err and "\n" not in err


def test_time_budget_fits_the_run_to_the_budget_and_stops_on_time(monkeypatch):
    from ocdit_ros.training import trainer as trainer_module

    clock = [100.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    budget = trainer_module.TimeBudget(minutes=1.0, steps=10_000, start_step=40)
    ends = []
    for step in range(41, 200):
        clock[0] += 0.5  # 0.5 s a step
        ends.append(budget.update(step))
        if ends[-1] <= step:
            break
    # Not fitted before 10 steps and 6 s (a tenth of the budget); then 54 s left at 0.5 s a step.
    assert ends[:11] == [10_000] * 11 and ends[11] == 52 + 108
    assert ends[-1] == step == 160  # 120 steps of 0.5 s: the minute is spent exactly at the fitted end
    short = trainer_module.TimeBudget(minutes=1.0, steps=60, start_step=0)
    clock[0] += 7.0
    assert short.update(12) == 60  # the fitted length never exceeds the configured steps


def test_refine_wrong_object_queries_name_the_problem_when_no_object_is_absent(data, tmp_path):
    """Every template object in every image: a wrong-object query has no absent object to ask for."""
    split, templates = data
    only = tmp_path / "three"
    only.mkdir()
    for f in Path(templates).glob("obj_00000[123].*"):
        (only / f.name).write_bytes(f.read_bytes())
    cfg = _cfg("refine", (split, only), tmp_path, false_positive_rate=1.0, present_negative_rate=0.0)
    src = ExampleSource(cfg, tiny(), load_template_bank(only))
    with pytest.raises(ValueError, match="every template object is in an image"):
        src.example(0)
