"""predict.py's files (`serving.inputs`, `image_io`): outputs never land on inputs or on files
the user did not ask to replace, image ids by the longest path suffix, decompression bombs and
EXIF orientation per image; the cases through the real command on a tiny export."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fcos_jax import errors, image_io
from fcos_jax.serving import inputs
from tests.test_user_errors import assert_one_line_error, export_dir, run  # noqa: F401


def _coco(tmp_path, names_ids):
  path = tmp_path / 'instances.json'
  path.write_text(json.dumps({'images': [{'file_name': n, 'id': i} for n, i in names_ids],
                              'annotations': [], 'categories': []}))
  return str(path)


def test_image_ids_take_the_longest_path_suffix(tmp_path):
  ann = _coco(tmp_path, [('a/x.jpg', 10), ('x.jpg', 20), ('b/x.jpg', 30), ('c/d/y.jpg', 40)])
  ids = inputs.image_ids(['two/b/x.jpg', 'one/x.jpg', 'a/x.jpg', '/r/c/d/y.jpg'], ann)
  assert ids == {'two/b/x.jpg': 30, 'one/x.jpg': 20, 'a/x.jpg': 10, '/r/c/d/y.jpg': 40}
  with pytest.raises(errors.DataError, match='no image whose file_name ends the path d/y.jpg'):
    inputs.image_ids(['d/y.jpg'], ann)  # a suffix of the file name is not a match
  with pytest.raises(errors.DataError, match="'b/x.jpg' \\(id 30\\), 'b/x.jpg' \\(id 31\\)"):
    inputs.image_ids(['q/b/x.jpg'], _coco(tmp_path, [('b/x.jpg', 30), ('b/x.jpg', 31)]))


def test_annotation_files_with_a_bom_and_broken_ones(tmp_path):
  bom = tmp_path / 'bom.json'
  bom.write_bytes(b'\xef\xbb\xbf' + json.dumps({'images': [{'file_name': 'x.png', 'id': 7}]})
                  .encode())
  assert inputs.image_ids(['p/x.png'], str(bom)) == {'p/x.png': 7}
  with pytest.raises(errors.DataError, match='missing.json: no such file'):
    inputs.image_ids(['x.png'], str(tmp_path / 'missing.json'))
  (tmp_path / 'bad.json').write_text('{"images": [{"id": 1}]}')
  with pytest.raises(errors.DataError, match=r'images\[0\] lacks "file_name"'):
    inputs.image_ids(['x.png'], str(tmp_path / 'bad.json'))


def test_outputs_never_land_on_inputs_or_on_an_unasked_folder(tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  (photos / 'orig.png').write_bytes(b'')
  files = [str(photos / 'orig.png')]
  outs = inputs.output_paths(files, str(photos))
  assert outs == {files[0]: str(photos / 'orig.png')}
  with pytest.raises(errors.UserError, match='would be written over the input'):
    inputs.check_outputs(files, outs, str(photos), overwrite=True)
  outs = inputs.output_paths(files, str(tmp_path / 'out'))
  inputs.check_outputs(files, outs, str(tmp_path / 'out'), overwrite=False)  # absent: fine
  (tmp_path / 'out').mkdir()
  inputs.check_outputs(files, outs, str(tmp_path / 'out'), overwrite=False)  # empty: fine
  (tmp_path / 'out' / 'results.json').write_text('[]')
  with pytest.raises(errors.UserError, match='is not empty'):
    inputs.check_outputs(files, outs, str(tmp_path / 'out'), overwrite=False)
  inputs.check_outputs(files, outs, str(tmp_path / 'out'), overwrite=True)
  with pytest.raises(errors.UserError, match='is a file, not a folder'):
    inputs.check_outputs(files, outs, files[0], overwrite=True)
  # An input named like the run's own files in --out.
  with pytest.raises(errors.UserError, match='results.json is an input'):
    inputs.check_outputs([str(tmp_path / 'out' / 'results.json')], {}, str(tmp_path / 'out'),
                         overwrite=True)
  # Earlier drawings under --out inside the input folder are not inputs.
  (photos / 'out').mkdir()
  (photos / 'out' / 'orig.png').write_bytes(b'')
  found, excluded = inputs.expand_inputs([str(photos)], exclude=str(photos / 'out'))
  assert found == files and excluded == 1
  assert inputs.expand_inputs([str(photos)], exclude=str(photos)) == (
      sorted(files + [str(photos / 'out' / 'orig.png')]), 0)  # --out = the input folder


def _png_header_only(width, height):
  """A PNG that declares width x height and holds no pixel data: what PIL reads to open it."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0,
                                                             0, 0)) + chunk(b'IEND', b''))


def test_pixel_limit_and_exif_orientation(tmp_path):
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(_png_header_only(20000, 20000))
  with pytest.raises(errors.DataError, match='bomb.png'):
    image_io.read_rgb8(str(bomb))
  small = tmp_path / 'small.png'
  Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(small)
  limit = Image.MAX_IMAGE_PIXELS
  try:
    image_io.set_pixel_limit(1000)
    with pytest.raises(errors.DataError, match='40x30 = 1200 pixels, above the limit of 1000'):
      image_io.read_rgb8(str(small))
    image_io.set_pixel_limit(1200)
    assert image_io.read_rgb8(str(small))[0].shape == (30, 40, 3)
  finally:
    Image.MAX_IMAGE_PIXELS = limit
  rotated = tmp_path / 'rotated.jpg'
  pixels = np.zeros((40, 60, 3), np.uint8)
  pixels[:, :10] = 255  # a white band on the stored image's left
  exif = Image.Exif()
  exif[image_io.EXIF_ORIENTATION_TAG] = 6  # shown rotated 90 degrees clockwise
  Image.fromarray(pixels).save(rotated, exif=exif, quality=95)
  stored, change = image_io.read_rgb8(str(rotated))
  assert stored.shape == (40, 60, 3) and change is None
  upright, change = image_io.read_rgb8(str(rotated), apply_exif_orientation=True)
  assert upright.shape == (60, 40, 3) and change == 'EXIF orientation 6 applied'
  # Independent reference: orientation 6 is the stored image turned 90 degrees clockwise.
  assert np.abs(upright.astype(int) - np.rot90(stored, k=-1).astype(int)).max() <= 2
  assert upright[:10].mean() > 200  # the band is now on top


def test_predict_refuses_to_write_over_inputs_or_outputs(export_dir, tmp_path):  # noqa: F811
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(photos / 'orig.png')
  before = (photos / 'orig.png').read_bytes()
  common = [f'--export={export_dir}', '--draw_scale=1']
  assert_one_line_error(run('predict.py', *common, f'--image={photos}', f'--out={photos}'),
                        str(photos / 'orig.png'), 'over the input')
  assert_one_line_error(run('predict.py', *common, f'--image={photos}', f'--out={photos}',
                            '--overwrite'), 'orig.png', 'over the input')
  assert_one_line_error(run('predict.py', *common, f'--image={photos}',
                            f'--out={photos / "orig.png"}'), 'is a file')
  assert_one_line_error(run('predict.py', *common, f'--image={photos}', f'--out={tmp_path / "o"}',
                            f'--annotations={tmp_path / "none.json"}'), 'none.json', 'no such file')
  assert (photos / 'orig.png').read_bytes() == before and os.listdir(photos) == ['orig.png']
  # A first run into photos/out, then a rerun: refused without --overwrite, and with it the
  # earlier drawing is not read back as an input.
  out = run('predict.py', *common, f'--image={photos}', f'--out={photos / "out"}')
  assert out.returncode == 0, out.stderr[-3000:]
  results = (photos / 'out' / 'results.json').read_bytes()
  assert_one_line_error(run('predict.py', *common, f'--image={photos}',
                            f'--out={photos / "out"}'), 'not empty', '--overwrite')
  assert (photos / 'out' / 'results.json').read_bytes() == results
  out = run('predict.py', *common, f'--image={photos}', f'--out={photos / "out"}', '--overwrite')
  assert out.returncode == 0, out.stderr[-3000:]
  assert '1 file(s) under --out' in out.stdout and '1 of 1 inputs done' in out.stdout
  with open(photos / 'out' / 'detections.json') as f:
    assert list(json.load(f)) == [str(photos / 'orig.png')]


def test_predict_skips_a_bomb_writes_the_rest_and_applies_exif(export_dir, tmp_path):  # noqa: F811
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'bomb.png').write_bytes(_png_header_only(20000, 20000))
  exif = Image.Exif()
  exif[image_io.EXIF_ORIENTATION_TAG] = 6
  Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / 'in' / 'turned.jpg',
                                                            exif=exif)
  out = run('predict.py', f'--export={export_dir}', '--draw_scale=1',
            f'--image={tmp_path / "in"}', f'--out={tmp_path / "out"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Traceback' not in out.stdout + out.stderr
  assert 'skipped' in out.stdout and 'bomb.png' in out.stdout and '1 skipped' in out.stdout
  assert 'EXIF orientation 6 applied' in out.stdout
  with Image.open(tmp_path / 'out' / 'turned.png') as im:
    assert im.size == (40, 60)  # drawn upright
  # Nothing readable: exit 1, one line.
  assert_one_line_error(run('predict.py', f'--export={export_dir}',
                            f'--image={tmp_path / "in" / "bomb.png"}',
                            f'--out={tmp_path / "out2"}'), 'none of the 1 inputs')


def test_predict_slices_a_large_image_as_the_detector_does(tmp_path):
  """predict.py --slice through the real command: the detections of `Detector.detect_sliced`,
  inside the image, more than the whole-image pass gives; an impossible setting is one line."""
  from fcos_jax import serving
  from fcos_jax.serving import export
  from tests import tiny_config
  config, model, variables, cats = tiny_config.random_detector()
  folder = str(tmp_path / 'export')
  export.export_detector(config, model, variables, folder, cats)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
  Image.fromarray(image).save(tmp_path / 'big.png')
  out = run('predict.py', f'--export={folder}', f'--image={tmp_path / "big.png"}',
            f'--out={tmp_path / "out"}', '--slice=128', '--overlap=0.25', '--draw_scale=1',
            '--min_score=0')
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.load(open(tmp_path / 'out' / 'detections.json'))[str(tmp_path / 'big.png')]
  detector = serving.Detector(folder)
  want = detector.detect_sliced(image, 128, 0.25)
  assert len(got) == len(want) > len(detector.detect(image))
  np.testing.assert_allclose([d['bbox'] for d in got], [d['bbox'] for d in want], atol=1e-3)
  boxes = np.array([d['bbox'] for d in got])
  assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 500).all() and (boxes[:, [1, 3]] <= 300).all()
  assert_one_line_error(run('predict.py', f'--export={folder}', f'--image={tmp_path / "big.png"}',
                            f'--out={tmp_path / "out2"}', '--slice=16'), '--slice 16')
  assert not (tmp_path / 'out2').exists()


def test_videos_are_written_in_h264_else_mpeg4(tmp_path, monkeypatch):
  """VideoWriter picks libx264 where FFmpeg has it (read back as h264 by PyAV, odd sizes padded
  to even, the frames kept), and MPEG-4 Part 2 without it."""
  import av
  from fcos_jax import video_io
  rng = np.random.default_rng(0)
  frames = [np.repeat(np.repeat(rng.integers(0, 256, (5, 7, 3), np.uint8), 9, 0), 9, 1)[:, :-1]
            for _ in range(6)]  # 45 x 62: an odd height
  assert 'libx264' in av.codecs_available  # this venv's PyAV wheel
  for codec, want in ((None, 'h264'), ('mpeg4', 'mpeg4')):
    path = str(tmp_path / f'{want}.mp4')
    writer = video_io.VideoWriter(path, 10, codec)
    for frame in frames:
      writer.write(frame)
    writer.close()
    with av.open(path) as container:
      assert container.streams.video[0].codec_context.name == want
      back = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
    assert len(back) == 6 and back[0].shape == (46, 62, 3)
    err = np.abs(np.stack(back)[:, None, :45].astype(float) - np.stack(frames)).mean((2, 3, 4))
    # Lossy (yuv420p halves the colour resolution), yet each frame is nearest its own source:
    # about 12 (H.264) and 17 (MPEG-4) levels against 85 between unrelated random frames.
    assert (err.argmin(1) == np.arange(6)).all() and err.diagonal().max() < 25, (codec, err)
  assert video_io.VideoWriter(str(tmp_path / 'x.mp4'), 10).codec_description == 'H.264, libx264'

  def no_x264(name, mode='r'):
    if name == 'libx264':
      raise av.codec.codec.UnknownCodecError(name)
    return real(name, mode)
  real = av.Codec
  monkeypatch.setattr(av, 'Codec', no_x264)
  assert video_io.video_codec() == 'mpeg4'
