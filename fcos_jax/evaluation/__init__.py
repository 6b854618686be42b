"""COCO evaluation: the prediction loop over a split (`prediction`), COCO ground truth, results
validation and results files (`coco_data`), COCOeval scoring (`scoring`), and the two entry
points that chain them (`run`: `evaluate`, `score_results_file`)."""

from fcos_jax.evaluation.run import evaluate, score_results_file  # noqa: F401
