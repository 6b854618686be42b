"""The contract every export format implements: a program per bucket shape that maps uint8
images and their unpadded sizes to fixed-size detections, under these names."""

INPUT_NAMES = ('images', 'image_sizes')
INPUTS = {'images': "uint8 [B, H, W, 3] RGB, (H, W) one of the models' shapes",
          'image_sizes': 'int32 [B, 2]: (h, w) of each resized image before padding'}

OUTPUT_KEYS = ('boxes', 'scores', 'classes', 'valid', 'num_valid')
OUTPUTS = {
    'boxes': 'float32 [B, K, 4]: x0, y0, x1, y1 in the pixels of the resized (unpadded) image; '
             '0 on padding rows',
    'scores': 'float32 [B, K]: descending; 0 on padding rows',
    'classes': 'int32 [B, K]: index into class_names / category_ids; -1 on padding rows',
    'valid': 'bool [B, K]: which rows are detections',
    'num_valid': 'int32 [B]: number of detections (the first rows)',
}

# The NMS-free variant (export.py --nonms) for runtimes that add their own NMS (TensorRT's
# EfficientNMS plugin takes exactly these two): every location of every level, no top-k.
RAW_OUTPUT_KEYS = ('boxes', 'scores')
RAW_OUTPUTS = {
    'boxes': 'float32 [B, N, 4]: x0, y0, x1, y1 of every location (levels P3..P7, row-major), '
             'in the pixels of the resized image, clipped to it',
    'scores': 'float32 [B, N, C]: final score per class (sqrt(class x centerness) with '
              'postprocess.sqrt_score); 0 where the location is outside the unpadded image or '
              'its box is empty; no threshold applied',
}

# StableHLO (also inside SavedModels) is lowered for each, so that an export written on a CPU
# machine serves on accelerators too.
PLATFORMS = ('cpu', 'cuda', 'tpu')
