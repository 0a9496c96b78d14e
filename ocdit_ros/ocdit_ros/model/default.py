"""The shipped default model: small coarse + refine OC-DiT weights trained on our synthetic data.

The files live in the package (`ocdit_ros/weights/`), so a pip or colcon install carries them.
What they were trained on and what they can do is in `ocdit_ros/weights/MODEL_CARD.md`.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
COARSE = "default_coarse.safetensors"
REFINE = "default_refine.safetensors"


class NoDefaultModel(FileNotFoundError):
    """No shipped weights in this install."""


def default_weights() -> tuple[Path, Path | None]:
    """(coarse, refine) weight files of the shipped model; refine is None if only coarse ships."""
    coarse, refine = WEIGHTS_DIR / COARSE, WEIGHTS_DIR / REFINE
    if not coarse.is_file():
        raise NoDefaultModel(f"no default model in {WEIGHTS_DIR} ({COARSE} missing); pass --weights, "
                             f"or train one with 'ocdit train' (docs/training.md)")
    return coarse, refine if refine.is_file() else None
