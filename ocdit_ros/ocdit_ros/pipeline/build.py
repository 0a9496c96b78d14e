"""The one way to get a Segmenter from weight files: `ocdit segment`, `ocdit eval`, `ocdit bag`, the
demo and the ROS node all call `build_segmenter` (or `ModelFiles.resolve(...).build(config)`).

Plain arguments, no argparse and no ROS. A problem a user can fix raises `SetupError`, which names
the setting (`weights`, `refine_weights`, `model_config`, `device`, ...) so that each front end can
print it its own way (`--weights` on the command line, the `weights` parameter on the node).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import PipelineConfig


class SetupError(ValueError):
    """A setting a user must change: `setting` names it, `problem` says what is wrong, `fix` how to fix it."""

    def __init__(self, setting: str, problem: str, fix: str = ""):
        self.setting, self.problem, self.fix = setting, problem, fix
        super().__init__(f"{setting}: {problem}" + (f"; {fix}" if fix else ""))

    def render(self, name: str) -> str:
        """The message with the setting spelled as the front end spells it (`--weights`, `parameter 'weights'`)."""
        return f"{name}: {self.problem}" + (f"; {self.fix}" if self.fix else "")


def load_objects(folder: str, setting: str, required: bool = False, hint: str = "") -> dict:
    """The template archives of `folder` by object id, for every front end (`--objects`, the node's
    `templates_dir`). An unset folder, or an empty one unless `required`, gives none."""
    from ..templates import ArchiveError, load_template_dir

    render = "render templates with 'ocdit templates render MESH --out DIR'"
    if not folder:
        if required:
            raise SetupError(setting, "no template folder given", render)
        return {}
    path = Path(folder).expanduser()
    if not path.exists():
        raise SetupError(setting, f"{path} does not exist", f"{render}{', ' + hint if hint else ''}")
    if not path.is_dir():
        raise SetupError(setting, f"{path} is not a folder", "give the folder that holds the *.npz + *.json archives")
    try:
        objects = {o.id: o for o in load_template_dir(path)}
    except (ArchiveError, OSError, ValueError) as exc:
        raise SetupError(setting, f"cannot read the templates in {path}: {exc}",
                         "re-render them with 'ocdit templates render'") from None
    if required and not objects:
        raise SetupError(setting, f"{path} holds no template archives (*.npz + *.json)", render)
    return objects


def resolve_device(device: str) -> str:
    """`device` checked against this torch: an unknown name or an unavailable CUDA device is refused
    (no silent CPU fallback: a model meant for a GPU would quietly run many times slower)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SetupError("device", f"{device!r} is not a torch device ({exc})", "use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type != "cuda":
        raise SetupError("device", f"{device!r}: only cpu and cuda devices are supported", "use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise SetupError("device", f"{device!r} is not available ({why}; torch {torch.__version__})",
                         "set the device to cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SetupError("device", f"{device!r}: only {torch.cuda.device_count()} CUDA device(s) visible",
                         f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return str(dev)


def check_weights_path(setting: str, path) -> Path:
    """An existing, readable weights file or save_pretrained folder, else a SetupError naming `setting`."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise SetupError(setting, f"{p} does not exist",
                         "give a .safetensors file or a save_pretrained folder "
                         "(or leave it empty for the shipped model)")
    target = p
    if p.is_dir():
        from ..model.weights import LEGACY_WEIGHTS, WEIGHTS

        found = [p / n for n in (WEIGHTS, LEGACY_WEIGHTS) if (p / n).is_file()]
        if not found:
            raise SetupError(setting, f"folder {p} holds neither {WEIGHTS} nor {LEGACY_WEIGHTS}",
                             "give the folder written by save_pretrained or a .safetensors file")
        target = found[0]
    if not os.access(target, os.R_OK):
        raise SetupError(setting, f"{target} is not readable by this user", "fix its permissions (chmod a+r)")
    return p


def check_cache_dir(setting: str, path) -> Path | None:
    """A writable folder for the feature cache (created if missing), None for an empty setting, else
    a SetupError naming `setting`: a bad folder is said at start-up, not on the first new object."""
    if not path:
        return None
    p = Path(os.path.expanduser(str(path)))
    keep = "or leave it empty to keep features in memory only"
    if p.exists() and not p.is_dir():
        raise SetupError(setting, f"{p} is a file, not a folder", f"give a folder, {keep}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SetupError(setting, f"cannot create {p} ({exc.strerror})", f"give a writable folder, {keep}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise SetupError(setting, f"{p} is not writable by this user", f"fix its permissions, {keep}")
    return p


@dataclass
class ModelFiles:
    """Which weights a Segmenter is built from (None: random weights of `model_config`, tests only)."""

    weights: Path | None
    refine_weights: Path | None
    model_config: str | None
    shipped: bool  # the package's default model

    @classmethod
    def resolve(cls, weights=None, refine_weights=None, model_config=None,
                random_weights: bool = False) -> "ModelFiles":
        """The given files, else the shipped default pair. `random_weights` (with `model_config`, no
        `weights`) builds an untrained model instead, for tests."""
        if random_weights and not weights:
            if not model_config:
                raise SetupError("model_config", "random weights need a model config", "give a preset such as 'tiny'")
            return cls(None, None, str(model_config), False)
        if weights:
            return cls(check_weights_path("weights", weights),
                       check_weights_path("refine_weights", refine_weights) if refine_weights else None,
                       str(model_config) if model_config else None, False)
        from ..model.default import NoDefaultModel, default_weights

        try:
            coarse, shipped_refine = default_weights()
        except NoDefaultModel as exc:
            raise SetupError("weights", str(exc)) from None  # the message says what to do
        refine = check_weights_path("refine_weights", refine_weights) if refine_weights else shipped_refine
        return cls(coarse, refine, str(model_config) if model_config else None, True)

    def build(self, config: PipelineConfig | None = None, seed: int = 0, cache_dir: str | Path | None = None):
        """Load the models onto `config.device` and wrap them in a Segmenter; `cache_dir` keeps the
        templates' backbone features on disk across runs (keyed by template pixels and weights)."""
        import torch

        from ..model import OCDiT, load_config
        from .segmenter import Segmenter

        config = config or PipelineConfig()
        cache_dir = check_cache_dir("feature_cache_dir", cache_dir)
        device = resolve_device(config.device)
        model_cfg = None
        if self.model_config:
            try:
                model_cfg = load_config(self.model_config)
            except (FileNotFoundError, ValueError) as exc:
                raise SetupError("model_config", str(exc), "give a preset (tiny, official_coarse, official_refine) "
                                 "or a model config YAML") from None
        if self.weights is None:
            torch.manual_seed(seed)
            return Segmenter(OCDiT.from_config(model_cfg).to(device).eval(), None, config, cache_dir)
        coarse = _load(self.weights, "weights", model_cfg, device)
        refine = _load(self.refine_weights, "refine_weights", model_cfg, device) if self.refine_weights else None
        return Segmenter(coarse, refine, config, cache_dir)


def _load(path: Path, setting: str, model_cfg, device: str):
    from ..model import load_model

    try:
        return load_model(path, model_cfg, device)
    except (FileNotFoundError, ValueError, OSError) as exc:  # safetensors raises its own errors for a bad file
        raise SetupError(setting, f"cannot load {path}: {exc}",
                         "give weights that match the model config (model_config for files without one)") from None
    except Exception as exc:  # noqa: BLE001 - e.g. safetensors_rust.SafetensorError on a corrupt file
        raise SetupError(setting, f"cannot read {path}: {type(exc).__name__}: {exc}",
                         "give a valid .safetensors file or save_pretrained folder") from None


def build_segmenter(weights=None, refine_weights=None, model_config=None, config: PipelineConfig | None = None,
                    random_weights: bool = False):
    """The Segmenter of these weight files (default: the shipped model) on `config.device`."""
    return ModelFiles.resolve(weights, refine_weights, model_config, random_weights).build(config)
