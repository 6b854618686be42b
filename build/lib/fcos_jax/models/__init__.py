"""Flax models: ResNet backbone, FPN, FCOS head and the assembled detector."""
