"""Smaller ONNX exports: int8 static quantization with onnxruntime (QDQ, per-channel weights).

Only the convolutions are quantized (int8 weights per output channel, uint8 activations scaled
from calibration batches by MinMax); normalization, GroupNorm, decode, top-k and the NMS loop
stay float32, so the detection graph's NMS keeps its exact behaviour. The converter's graph
computes each kernel's layout with a Transpose; onnxruntime's pre-processing folds those into
initializers first, else no convolution would count as having weights.
"""

import os
from typing import Dict, Iterable, Iterator

import numpy as np

PRECISIONS = ('float32', 'float16', 'int8')


def quantize_int8(src: str, dst: str, calibration: Iterable[Dict[str, np.ndarray]]) -> None:
  """Writes the int8 model of ONNX file `src` to `dst`; `calibration` yields input feeds
  ({'images': uint8 [B, H, W, 3], 'image_sizes': int32 [B, 2]}) of the model's shape."""
  from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                        QuantType, quantize_static)
  from onnxruntime.quantization.shape_inference import quant_pre_process

  class Reader(CalibrationDataReader):
    def __init__(self, feeds: Iterator[Dict[str, np.ndarray]]):
      self.feeds = feeds

    def get_next(self):
      return next(self.feeds, None)

  folded = dst + '.folded.onnx'
  try:
    quant_pre_process(src, folded, skip_symbolic_shape=True)
    quantize_static(folded, dst, Reader(iter(calibration)), quant_format=QuantFormat.QDQ,
                    per_channel=True, op_types_to_quantize=['Conv'],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
  finally:
    if os.path.exists(folded):
      os.remove(folded)
