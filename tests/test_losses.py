"""Losses against numpy references written from the formulas; global normalization on 8 devices."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from fcos_jax import losses, targets


def np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def np_focal(logit, t, alpha=0.25, gamma=2.0):
  p = np_sigmoid(logit)
  ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  p_t = p * t + (1 - p) * (1 - t)
  a_t = alpha * t + (1 - alpha) * (1 - t)
  return a_t * (1 - p_t) ** gamma * ce


def np_boxes(ltrb):
  """Boxes around the origin from ltrb: (-l, -t, r, b)."""
  l, t, r, b = ltrb
  return -l, -t, r, b


def np_iou_giou(pred, target, smooth=1.0, eps=1e-7):
  px0, py0, px1, py1 = np_boxes(pred)
  tx0, ty0, tx1, ty1 = np_boxes(target)
  iw = max(min(px1, tx1) - max(px0, tx0), 0)
  ih = max(min(py1, ty1) - max(py0, ty0), 0)
  inter = iw * ih
  union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
  iou = (inter + smooth) / (union + smooth) if smooth else inter / (union + eps)
  enclose = (max(px1, tx1) - min(px0, tx0)) * (max(py1, ty1) - min(py0, ty0))
  return iou, iou - (enclose - union) / (enclose + eps)


def test_focal_loss_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (50, 7)).astype(np.float32)
  t = (rng.random((50, 7)) < 0.2).astype(np.float32)
  got = np.asarray(losses.sigmoid_focal_loss(jnp.asarray(logits), jnp.asarray(t)))
  np.testing.assert_allclose(got, np_focal(logits.astype(np.float64), t), rtol=1e-4, atol=1e-7)


def test_focal_loss_stable_for_large_logits():
  logits = jnp.array([[-100.0, 100.0, 0.0]])
  t = jnp.array([[1.0, 0.0, 1.0]])
  got = np.asarray(losses.sigmoid_focal_loss(logits, t))
  assert np.isfinite(got).all()
  assert got[0, 0] == pytest.approx(0.25 * 100, rel=1e-4)
  assert got[0, 1] == pytest.approx(0.75 * 100, rel=1e-4)


@pytest.mark.parametrize('smooth', [1.0, 0.0])
def test_iou_and_giou_losses_match_reference(smooth):
  rng = np.random.default_rng(1)
  pred = rng.uniform(0.0, 10, (200, 4)).astype(np.float32)
  target = rng.uniform(0.5, 10, (200, 4)).astype(np.float32)
  got_iou = np.asarray(losses.iou_loss(jnp.asarray(pred), jnp.asarray(target), 'iou', smooth))
  got_giou = np.asarray(losses.iou_loss(jnp.asarray(pred), jnp.asarray(target), 'giou', smooth))
  for k in range(200):
    iou, giou = np_iou_giou(pred[k].astype(np.float64), target[k].astype(np.float64), smooth)
    assert got_iou[k] == pytest.approx(-math.log(max(iou, 1e-7)), rel=1e-4, abs=1e-5)
    assert got_giou[k] == pytest.approx(1 - giou, rel=1e-4, abs=1e-5)


def test_iou_loss_is_zero_for_perfect_prediction():
  ltrb = jnp.array([[3.0, 4.0, 5.0, 6.0]])
  assert float(losses.iou_loss(ltrb, ltrb, 'iou')[0]) == pytest.approx(0, abs=1e-6)
  assert float(losses.iou_loss(ltrb, ltrb, 'giou', 0.0)[0]) == pytest.approx(0, abs=1e-6)


def random_batch(rng, batch, n, num_classes):
  classes = np.where(rng.random((batch, n)) < 0.1, rng.integers(0, num_classes, (batch, n)), -1)
  ltrb = np.where(classes[..., None] >= 0, rng.uniform(0.5, 20, (batch, n, 4)), 0)
  ctr = np.sqrt(np.minimum(ltrb[..., 0], ltrb[..., 2]) / np.maximum(ltrb[..., 0], ltrb[..., 2] + 1e-9)
                * np.minimum(ltrb[..., 1], ltrb[..., 3]) / np.maximum(ltrb[..., 1], ltrb[..., 3] + 1e-9))
  tg = targets.Targets(jnp.asarray(classes, jnp.int32), jnp.asarray(ltrb, jnp.float32),
                       jnp.asarray(np.where(classes >= 0, ctr, 0), jnp.float32))
  outputs = (jnp.asarray(rng.normal(-2, 2, (batch, n, num_classes)), jnp.float32),
             jnp.asarray(rng.uniform(0.1, 20, (batch, n, 4)), jnp.float32),
             jnp.asarray(rng.normal(0, 1, (batch, n)), jnp.float32))
  return outputs, tg


@pytest.mark.parametrize('box_loss,weighting,smooth',
                         [('iou', 'centerness', 1.0), ('giou', 'uniform', 0.0)])
def test_fcos_losses_match_reference(box_loss, weighting, smooth):
  rng = np.random.default_rng(2)
  (cls, reg, ctr), tg = random_batch(rng, 3, 40, 5)
  got = losses.fcos_losses(cls, reg, ctr, tg, num_classes=5, box_loss=box_loss,
                           iou_smooth=smooth, box_weighting=weighting)
  c, r, t = (np.asarray(a, np.float64) for a in (cls, reg, ctr))
  tc, tl, tt = (np.asarray(a) for a in tg)
  focal = box = bce = wsum = 0.0
  num_pos = 0
  for b in range(3):
    for n in range(40):
      onehot = np.zeros(5)
      if tc[b, n] >= 0:
        onehot[tc[b, n]] = 1
      focal += np_focal(c[b, n], onehot).sum()
      if tc[b, n] < 0:
        continue
      num_pos += 1
      iou, giou = np_iou_giou(r[b, n], tl[b, n].astype(np.float64), smooth)
      per = -math.log(iou) if box_loss == 'iou' else 1 - giou
      w = tt[b, n] if weighting == 'centerness' else 1.0
      box += w * per
      wsum += w
      p = np_sigmoid(t[b, n])
      bce += -(tt[b, n] * math.log(p) + (1 - tt[b, n]) * math.log(1 - p))
  assert num_pos > 5
  assert float(got['num_pos']) == num_pos
  assert float(got['cls']) == pytest.approx(focal / num_pos, rel=1e-4)
  assert float(got['box']) == pytest.approx(box / wsum, rel=1e-4)
  assert float(got['centerness']) == pytest.approx(bce / num_pos, rel=1e-4)
  assert float(got['total']) == pytest.approx((focal + bce) / num_pos + box / wsum, rel=1e-4)


def test_no_positive_batch_gives_finite_loss_and_gradients():
  rng = np.random.default_rng(3)
  (cls, reg, ctr), _ = random_batch(rng, 2, 30, 4)
  tg = targets.Targets(jnp.full((2, 30), -1, jnp.int32), jnp.zeros((2, 30, 4)), jnp.zeros((2, 30)))
  reg = reg.at[0, 0].set(jnp.inf)  # an overflowing exp() at a background location stays harmless

  def total(c, r, t):
    return losses.fcos_losses(c, r, t, tg, num_classes=4)['total']
  value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(cls, reg, ctr)
  assert np.isfinite(float(value))
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  # With no positives only the focal term remains, normalized by 1.
  want = np_focal(np.asarray(cls, np.float64), np.zeros((2, 30, 4))).sum()
  assert float(value) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize('weighting', ['centerness', 'uniform'])
def test_global_normalization_over_8_devices_equals_one_device(weighting):
  assert jax.device_count() >= 8, 'conftest should force 8 CPU devices'
  rng = np.random.default_rng(4)
  (cls, reg, ctr), tg = random_batch(rng, 16, 24, 3)
  # Uneven positives per device, including devices with none.
  classes = np.asarray(tg.classes).copy()
  classes[:4] = -1
  tg = tg._replace(classes=jnp.asarray(classes),
                   centerness=jnp.where(jnp.asarray(classes) >= 0, tg.centerness, 0.0))
  kw = dict(num_classes=3, box_loss='giou', box_weighting=weighting)

  def single(c, r, t):
    return losses.fcos_losses(c, r, t, tg, **kw)['total']
  want, want_grads = jax.value_and_grad(single, argnums=(0, 1, 2))(cls, reg, ctr)

  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P('data'), out_specs=(P(), P('data')))
  def sharded(c, r, t, tg):
    def local(c, r, t):
      return losses.fcos_losses(c, r, t, tg, axis_name='data', **kw)['total']
    value, grads = jax.value_and_grad(local, argnums=(0, 1, 2))(c, r, t)
    # What a data-parallel step does: average the loss and the gradients over devices.
    return jax.lax.pmean(value, 'data'), jax.tree_util.tree_map(lambda g: g / 8, grads)

  got, got_grads = jax.jit(sharded)(cls, reg, ctr, tg)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-8)
