"""The training loop of every stage (vae, coarse, refine, backbone): AdamW, warm-up + cosine, EMA,
checkpoints with exact resume, logs, DDP.

Launch one process (`ocdit train coarse --config ...`) or several with `torchrun`; under torchrun
every rank draws its own slice of each global batch (examples.py) and DistributedDataParallel
averages the gradients (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from ..model import OCDiT, load_config
from ..model.weights import config_from_file, load_weights, read_state_dict, save_weights
from .config import TrainConfig
from .losses import DiffusionLoss, MatchingLoss, VAELoss
from .examples import ExampleSource, load_template_bank, template_render_record

CHECKPOINT = "checkpoint_{step:07d}.pt"


class _Examples(Dataset):
    def __init__(self, source: ExampleSource):
        self.source = source

    def __len__(self) -> int:  # indices are global example numbers, not positions in a list
        return 2**62

    def __getitem__(self, index: int):
        return self.source.example(int(index))


class _BatchIndices(Sampler):
    """Global example numbers of this rank for steps start..steps-1 (rank r takes slice r of each batch)."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int):
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch


def _as_list(examples: list) -> list:
    return examples


def _to(example: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in example.items()}


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: TrainConfig) -> OCDiT:
    """The model of a stage: the init weights' config (if stored) else `cfg.model`. Only the stage's
    part trains: the VAE in `vae`, the ViT alone in `backbone`, the diffuser (and the ViT unless
    frozen) in `coarse` and `refine`."""
    stored = config_from_file(cfg.init) if cfg.init else None
    model_cfg = stored or load_config(cfg.model)
    if stored is not None and cfg.init_partial:
        # A grown model: `cfg.model`'s architecture, but the frozen VAE as stored (its latent
        # scale, vae.raw_std, was measured on its data and belongs to its weights).
        model_cfg = dataclasses.replace(load_config(cfg.model), vae=stored.vae)
    model_cfg.vae.trainable = cfg.stage == "vae"
    if cfg.backbone_init:
        model_cfg.backbone = dataclasses.replace(model_cfg.backbone, trainable=False)
    if cfg.stage == "backbone":
        model_cfg.backbone = dataclasses.replace(model_cfg.backbone, trainable=True)
    if stored is not None:
        # The init file holds the backbone: build without fetching backbone.weights (as load_model).
        model = OCDiT.from_config(dataclasses.replace(model_cfg, backbone=dataclasses.replace(model_cfg.backbone,
                                                                                              weights=None)))
        model.config = model_cfg
    else:
        model = OCDiT.from_config(model_cfg)
    if cfg.init:
        load_weights(model, cfg.init, strict=not cfg.init_partial)
    if cfg.backbone_init:
        load_backbone_from(model, cfg.backbone_init)
    if cfg.stage == "vae":
        model.requires_grad_(False)
        model.vae.requires_grad_(True)
    elif cfg.stage == "backbone":
        model.requires_grad_(False)
        model.feature_extractor.requires_grad_(True)
    else:
        model.vae.requires_grad_(False)
        model.diffuser.requires_grad_(True)
        model.feature_extractor.requires_grad_(model_cfg.backbone.trainable)
    # DINOv2's mask token is never used here; left trainable it would stall DDP's gradient buckets.
    model.feature_extractor.model.mask_token.requires_grad_(False)
    return model


def load_backbone_from(model: OCDiT, path: str) -> None:
    """Copy the ViT of another model file (same architecture) into `model`."""
    prefix = "feature_extractor."
    theirs = {k[len(prefix):]: v for k, v in read_state_dict(path).items() if k.startswith(prefix)}
    mine = model.feature_extractor.state_dict()
    if not theirs:
        raise ValueError(f"backbone_init {path}: no backbone weights (feature_extractor.*) in the file")
    wrong = sorted(k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape)
    if wrong:
        raise ValueError(f"backbone_init {path}: its backbone does not fit this model ({wrong[:3]} ...); "
                         f"pretrain it with the same model preset")
    model.feature_extractor.load_state_dict(theirs, strict=True)


class TimeBudget:
    """Fits a run to a wall-clock budget: measures its speed once, then ends it on time."""

    def __init__(self, minutes: float, steps: int, start_step: int):
        self.seconds, self.steps, self.start = minutes * 60, steps, start_step
        self.t0 = time.perf_counter()
        self.fitted = False

    def update(self, step: int) -> int:
        """The step the run ends at, now that it is at `step`."""
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        # Measured after start-up (workers, first batches, kernel selection) has passed.
        if not self.fitted and done >= 10 and elapsed >= min(60.0, 0.1 * self.seconds):
            self.fitted = True
            self.steps = min(self.steps, step + max(1, int((self.seconds - elapsed) * done / elapsed)))
        if elapsed >= self.seconds:
            self.steps = step
        return self.steps


class EMA:
    """Exponential moving average of the trainable parameters (warm-up: decay grows with steps)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1 - decay)

    def copy_to(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in self.shadow.items():
                params[k].copy_(v)


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str | None = None, quiet: bool = False):
        self.cfg = cfg.validate()
        self.quiet = quiet
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
        if device is None:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.model = build_model(cfg).to(self.device)
        templates = load_template_bank(cfg.templates) if cfg.stage != "vae" else None
        # Exported with the weights, so templates of new objects are rendered like these.
        self.model.template_render = template_render_record(cfg.templates) if cfg.stage != "vae" else None
        self.source = ExampleSource(cfg, self.model.config, templates)
        if cfg.stage == "vae":
            self.loss_fn = VAELoss(self.model, cfg.kl_weight)
        elif cfg.stage == "backbone":
            self.loss_fn = MatchingLoss(self.model.feature_extractor.model, self.model.config.backbone.patch_size,
                                        cfg.temperature)
        else:
            self.loss_fn = DiffusionLoss(self.model, cfg.sigma_distribution)
        self.wrapped = self.loss_fn
        if self.world > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.loss_fn, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.ema = EMA(self.model, cfg.ema_decay)
        self.step = 0
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and cfg.amp in ("auto", "bf16") else nullcontext())

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.shadow,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "config": json.dumps(self.cfg.to_dict()), "model_config": json.dumps(self.model.config.to_dict())}

    def save_checkpoint(self) -> Path | None:
        if self.rank != 0:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CHECKPOINT.format(step=self.step)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written checkpoint
        (self.out / "last_checkpoint.txt").write_text(path.name)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        # weights_only: a checkpoint is data, never code (tensors, numbers, strings only).
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.shadow = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.step = int(state["step"])

    def latest_checkpoint(self) -> Path | None:
        marker = self.out / "last_checkpoint.txt"
        if marker.is_file() and (self.out / marker.read_text().strip()).is_file():
            return self.out / marker.read_text().strip()
        return None

    # -- loop ----------------------------------------------------------------------------
    def loader(self, steps: int) -> DataLoader:
        sampler = _BatchIndices(self.step, steps, self.cfg.batch_size, self.rank, self.world)
        workers = self.cfg.num_workers
        # Its own generator: creating the iterator must not advance the global RNG, which the
        # model's random class positions use and checkpoints restore.
        # Backbone examples hold a varying number of objects each: batches stay lists of examples.
        collate = _as_list if self.cfg.stage == "backbone" else None
        return DataLoader(_Examples(self.source), generator=torch.Generator().manual_seed(self.cfg.seed),
                          batch_size=self.cfg.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None,
                          pin_memory=self.device.type == "cuda")

    def train_step(self, batch: dict[str, torch.Tensor] | list[dict]) -> dict[str, float]:
        self.model.train()
        self.model.vae.train(self.cfg.stage == "vae")
        with self.autocast:
            if isinstance(batch, list):  # backbone: one dict per example
                out = self.wrapped([_to(s, self.device) for s in batch])
            else:
                out = self.wrapped(**_to(batch, self.device))
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        metrics = {k: float(v.detach()) for k, v in out.items()}
        metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    def fit(self, steps: int | None = None) -> dict[str, float]:
        """Train up to `steps` (default: cfg.steps) or the time budget; checkpoints, logs; returns the last metrics."""
        steps = steps or self.cfg.steps
        writer, log = self._loggers()
        bar = self._progress(steps)
        metrics: dict[str, float] = {}
        t0, done = time.perf_counter(), 0
        budget = TimeBudget(self.cfg.max_minutes, steps, self.step) if self.cfg.max_minutes else None
        for batch in self.loader(steps):
            metrics = self.train_step(batch)
            done += 1
            if budget is not None:
                fitted = self._agreed(budget.update(self.step))
                if fitted != steps:
                    log.write(json.dumps({"step": self.step, "fitted_steps": fitted}) + "\n")
                    # The schedule follows (lr_factor reads cfg.steps), and so does the checkpoint's config.
                    steps = self.cfg.steps = fitted
            if self.rank == 0:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.step % self.cfg.log_every == 0 or self.step == steps:
                    seconds = time.perf_counter() - t0
                    metrics["examples_per_second"] = done * self.cfg.batch_size * self.world / seconds
                    log.write(json.dumps({"step": self.step, **metrics}) + "\n")
                    log.flush()
                    if writer is not None:
                        for k, v in metrics.items():
                            writer.add_scalar(f"{self.cfg.stage}/{k}", v, self.step)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == steps:
                    self.save_checkpoint()
                    if self.cfg.export_on_checkpoint:  # usable weights while a long run goes on
                        self.export()
            if self.step >= steps:  # a time budget ended the run early
                break
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        log.close()
        return metrics

    def _agreed(self, steps: int) -> int:
        """Under DDP every rank stops at rank 0's step (their clocks differ)."""
        if self.world == 1:
            return steps
        t = torch.tensor([steps], device=self.device)
        dist.broadcast(t, 0)
        return int(t.item())

    def export(self, path: str | Path | None = None, use_ema: bool = True) -> Path | None:
        """Model weights (EMA by default) with the model config inside, for load_model / ocdit segment."""
        if self.rank != 0:
            return None
        path = Path(path or self.out / "model.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.model)  # a copy, so the live training weights stay untouched
        if use_ema:
            self.ema.copy_to(model)
        if self.cfg.stage == "vae":
            model.config.vae.raw_std = self.latent_std(model)
            model.vae.scale = model.config.vae.final_std / model.config.vae.raw_std
        if self.cfg.stage == "backbone":  # stages that start from this file keep the ViT frozen
            model.config.backbone = dataclasses.replace(model.config.backbone, trainable=False)
        save_weights(model.cpu(), path)
        return path

    @torch.no_grad()
    def latent_std(self, model: OCDiT, count: int = 256) -> float:
        """Std of posterior means over fresh masks: sets raw_std so diffused latents have std final_std."""
        model.eval()
        masks = torch.stack([self.source.example(10**12 + i)["masks"] for i in range(count)]).to(self.device)
        mean, _ = model.to(self.device).vae.net.moments(masks)
        return float(mean.std())

    def _loggers(self):
        if self.rank != 0:
            return None, open(os.devnull, "w")
        self.out.mkdir(parents=True, exist_ok=True)
        writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"))
        except ImportError:  # TensorBoard is optional; log.jsonl always has the numbers
            pass
        return writer, open(self.out / "log.jsonl", "a")

    def _progress(self, steps: int):
        if self.rank != 0 or self.quiet:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=steps, initial=self.step, desc=f"train {self.cfg.stage}", file=sys.stderr)

