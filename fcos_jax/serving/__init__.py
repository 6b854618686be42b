"""Serving: writing an export (`serving.export`) and running one (`serving.detector.Detector`,
also `fcos_jax.serving.Detector`)."""

from fcos_jax.serving.detector import Detector  # noqa: F401
