"""Data: COCO-format conversion to TFDS, the synthetic shapes dataset and the input pipeline."""
