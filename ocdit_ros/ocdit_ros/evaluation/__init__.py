"""Evaluation: COCO-style segmentation AP of BOP 2D-segmentation results (pycocotools), `ocdit eval`."""

from .coco import CocoScores, ResultsError, evaluate, ground_truth, image_key

__all__ = ["CocoScores", "ResultsError", "evaluate", "ground_truth", "image_key"]
