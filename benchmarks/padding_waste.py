"""Fraction of padded (wasted) pixels: aspect-ratio buckets vs one square shape.

  python -m benchmarks.padding_waste                       # assumed COCO-like size mix
  python -m benchmarks.padding_waste --annotations instances_train2017.json   # exact, any COCO file
"""

import argparse
import json

import numpy as np

from fcos_jax.data.preprocessing import bucket_shapes

# Assumed mix of COCO-like image sizes (w, h): COCO images have a longer side of 640 px and are
# mostly 4:3 or 3:2, about a quarter portrait. Use --annotations for the exact figure.
ASSUMED_MIX = {(640, 480): 0.45, (640, 427): 0.20, (640, 640): 0.05, (640, 360): 0.05,
               (480, 640): 0.15, (427, 640): 0.10}


def waste(sizes, weights, min_size, max_size, divisibility):
  """{name: wasted fraction} for the two-bucket and the single square layout."""
  out = {}
  for name, aspect in (('landscape+portrait buckets', True), ('one square shape', False)):
    shapes = bucket_shapes((min_size,), max_size, divisibility, aspect)
    used = padded = 0.0
    for (w, h), p in zip(sizes, weights):
      s = min(min_size / min(h, w), max_size / max(h, w))
      nh, nw = round(h * s), round(w * s)
      bh, bw = shapes[1] if (len(shapes) == 2 and h > w) else shapes[0]
      used += p * nh * nw
      padded += p * bh * bw
    out[name] = 1 - used / padded
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--annotations', help='COCO-format JSON whose image sizes to use')
  parser.add_argument('--min_size', type=int, default=800)
  parser.add_argument('--max_size', type=int, default=1333)
  parser.add_argument('--divisibility', type=int, nargs='+', default=[128, 32])
  args = parser.parse_args()
  if args.annotations:
    with open(args.annotations) as f:
      sizes = [(im['width'], im['height']) for im in json.load(f)['images']]
    weights = np.full(len(sizes), 1 / len(sizes))
    source = f'{len(sizes)} images of {args.annotations}'
  else:
    sizes, weights = list(ASSUMED_MIX), list(ASSUMED_MIX.values())
    source = 'assumed COCO-like mix ' + ', '.join(f'{w}x{h}:{p:.0%}' for (w, h), p in ASSUMED_MIX.items())
  print(f'sizes: {source}; resize {args.min_size}/{args.max_size}')
  print(f'{"layout":<30}{"divisible by":>14}{"padded shape(s)":>24}{"wasted pixels":>16}')
  for div in args.divisibility:
    for name, frac in waste(sizes, weights, args.min_size, args.max_size, div).items():
      shapes = bucket_shapes((args.min_size,), args.max_size, div, name.startswith('landscape'))
      shape_str = ' / '.join(f'{h}x{w}' for h, w in shapes)
      print(f'{name:<30}{div:>14}{shape_str:>24}{frac:>15.1%}')


if __name__ == '__main__':
  main()
