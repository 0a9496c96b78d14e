"""What the commands that segment (`ocdit segment`, `ocdit eval`, `ocdit bag`) share: one-line
user errors, the model options, --objects, the pipeline config with overrides, and the segmenter
of --weights."""

from __future__ import annotations

from .pipeline.config import PipelineConfig


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def add_model_options(p) -> None:
    """--weights, --refine-weights, --model-config and --feature-cache-dir, spelled and explained once."""
    p.add_argument("--weights", help="coarse model weights (.safetensors or save_pretrained folder); "
                                     "default: the shipped model (ocdit_ros/weights/MODEL_CARD.md)")
    p.add_argument("--refine-weights", help="refine model weights (default: the shipped refine model without "
                                            "--weights, else the coarse model does both stages)")
    p.add_argument("--model-config", help="model config (preset or YAML) for weights without a stored config")
    p.add_argument("--feature-cache-dir", help="folder that keeps the templates' backbone features across runs "
                                           "(keyed by template pixels and weights; default: memory only)")


def load_objects(folder: str) -> list:
    """--objects: the template archives of a folder (at least one), as `pipeline.build.load_objects` reads them."""
    from .pipeline.build import SetupError, load_objects as load

    try:
        return list(load(folder, "objects", required=True).values())
    except SetupError as exc:
        raise CliError(exc.render(option_name(exc.setting))) from None


def pipeline_config(path: str | None, **overrides) -> PipelineConfig:
    """The YAML at `path` (else the defaults) with command-line overrides; None keeps a value.
    Dotted names reach into the stages: `**{"coarse.ensemble": 2}`."""
    cfg = PipelineConfig.from_yaml(path) if path else PipelineConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return cfg.replace(**changes) if changes else cfg


def cli_segmenter(args, cfg: PipelineConfig, files=None):
    """The library builder (`pipeline.build`) for --weights/--refine-weights/--model-config (default:
    the shipped model); a setting's problem is reported with its option name."""
    from .pipeline.build import ModelFiles, SetupError

    try:
        files = files or ModelFiles.resolve(args.weights, args.refine_weights, args.model_config)
        return files.build(cfg, cache_dir=args.feature_cache_dir)
    except SetupError as exc:
        raise CliError(exc.render(option_name(exc.setting))) from None


def option_name(setting: str) -> str:
    """A builder setting as the command line spells it (refine_weights -> --refine-weights)."""
    return "--" + setting.replace("_", "-")
