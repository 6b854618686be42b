"""Video files frame by frame (PyAV, FFmpeg's libraries): decoding to uint8 RGB arrays and
encoding drawn frames back to a video, for predict.py."""

from typing import Iterator, Optional

import numpy as np

from fcos_jax import errors

VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')


def frame_rate(path: str) -> float:
  import av
  try:
    with av.open(path) as container:
      rate = container.streams.video[0].average_rate
  except (av.error.FFmpegError, IndexError, OSError) as e:
    raise errors.DataError(f'{path}: not a readable video ({e})') from None
  return float(rate) if rate else 25.0


def read_frames(path: str) -> Iterator[np.ndarray]:
  """uint8 RGB frames [H, W, 3] of the first video stream."""
  import av
  try:
    with av.open(path) as container:
      for frame in container.decode(video=0):
        yield frame.to_ndarray(format='rgb24')
  except (av.error.FFmpegError, OSError) as e:
    raise errors.DataError(f'{path}: not a readable video ({e})') from None


# Output codecs, best first: H.264 (FFmpeg's libx264, in PyAV's wheels) plays in every browser
# and player; MPEG-4 Part 2, built into every FFmpeg, is the fallback.
CODECS = {'libx264': 'H.264', 'mpeg4': 'MPEG-4 Part 2'}


def video_codec() -> str:
  """The first codec of `CODECS` this PyAV's FFmpeg can encode with."""
  import av
  for name in CODECS:
    try:
      av.Codec(name, 'w')
      return name
    except ValueError:  # av's UnknownCodecError: FFmpeg built without it
      continue
  return 'mpeg4'


class VideoWriter:
  """Writes RGB frames to an .mp4 file in `codec` (default: `video_codec()`, H.264 where
  available), sizes padded to even numbers as yuv420p needs."""

  def __init__(self, path: str, rate: float, codec: Optional[str] = None):
    import av
    from fractions import Fraction
    self.codec = codec or video_codec()
    self._container = av.open(path, 'w')
    self._rate = Fraction(rate).limit_denominator(1001)
    self._stream = None

  @property
  def codec_description(self) -> str:
    """E.g. 'H.264, libx264', for messages."""
    return f'{CODECS.get(self.codec, self.codec)}, {self.codec}'

  def write(self, frame: np.ndarray) -> None:
    import av
    h, w = frame.shape[:2]
    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
    if self._stream is None:
      self._stream = self._container.add_stream(self.codec, rate=self._rate)
      self._stream.height, self._stream.width = frame.shape[:2]
      self._stream.pix_fmt = 'yuv420p'
    for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
      self._container.mux(packet)

  def close(self) -> None:
    if self._stream is not None:
      for packet in self._stream.encode():
        self._container.mux(packet)
    self._container.close()
