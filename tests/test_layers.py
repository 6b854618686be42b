"""The CPU layer forms are chosen per platform at lowering: programs lowered here for GPUs and
TPUs (`jax.export`, no device needed) hold XLA's native forms only, the CPU program the CPU
forms, and the native forms compute what the CPU forms do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import inference
from fcos_jax.models import fcos, group_norm, max_pool
from tests import tiny_config


def _train_and_inference_text(platform):
  """StableHLO of the gradient of a loss over every model output, and of inference with the
  postprocess, of the tiny from-scratch model (stem, GroupNorm backbone: every form in use)."""
  config = tiny_config.get_config()
  config.model.dtype = 'auto'  # the COCO configs' default: bfloat16 on GPUs and TPUs
  assert config.model.freeze_at == 0 and config.model.backbone_norm == 'gn'
  model = fcos.create_model(config.model)
  variables = fcos.abstract_variables(model)
  images = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)

  def loss(params, images):
    out = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, images)
    return sum(jnp.sum(jnp.square(v)) for v in jax.tree_util.tree_leaves(out))
  grad = jax.export.export(jax.jit(jax.grad(loss)), platforms=[platform])(
      variables['params'], images)
  predict = inference.make_predict_fn(config, model)
  infer = jax.export.export(jax.jit(lambda v, x, s: predict(v, x, s)), platforms=[platform])(
      variables, jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.uint8),
      jax.ShapeDtypeStruct((2, 2), jnp.int32))
  return grad.mlir_module(), infer.mlir_module()


def _platform_choices(text):
  """Ops of the module (not its location names) that still refer to a platform choice."""
  return [l for l in text.splitlines() if 'platform_index' in l and not l.startswith('#loc')]


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_gpu_and_tpu_programs_hold_only_the_native_forms(platform):
  train, infer = _train_and_inference_text(platform)
  # No matrix products: the CPU forms (1x1 convs, per-offset weight gradients, small-map
  # convolutions) are all products, and the model has no dense layer.
  assert 'dot_general' not in train and 'dot_general' not in infer
  assert 'stablehlo.convolution' in train and 'stablehlo.convolution' in infer
  assert 'select_and_scatter' in train  # XLA's max-pool gradient
  assert not _platform_choices(train)  # lowered for one platform: its branch alone
  # 'auto' computes in bfloat16 here: every convolution takes bf16 operands.
  for text in (train, infer):
    convs = [l for l in text.splitlines() if 'stablehlo.convolution' in l]
    assert convs and all('xbf16>' in l for l in convs), [l for l in convs if 'xbf16>' not in l][:2]


def test_the_cpu_program_holds_the_cpu_forms():
  train, infer = _train_and_inference_text('cpu')
  assert 'dot_general' in train and 'dot_general' in infer
  assert 'select_and_scatter' not in train
  assert not _platform_choices(train)
  # 'auto' computes in float32 on CPUs: no bf16 product (the gradient keeps dead bf16 zeros
  # for the other branch's residuals, which XLA removes).
  assert 'bf16' not in infer
  products = [l for l in train.splitlines() if 'dot_general' in l or 'convolution' in l]
  assert products and not any('bf16' in l for l in products)


def test_native_group_norm_is_flaxs():
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 32)) * 3 + 1
  scale = jax.random.normal(jax.random.key(1), (32,))
  bias = jax.random.normal(jax.random.key(2), (32,))
  want = nn.GroupNorm(num_groups=8, epsilon=1e-5).apply(
      {'params': {'scale': scale, 'bias': bias}}, x)
  got = group_norm.group_norm_native(x, scale, bias, 8, 1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, group_norm.group_norm(x, scale, bias, 8, 1e-5), rtol=1e-5,
                             atol=1e-5)


def test_one_export_for_all_platforms_runs_the_cpu_forms_here():
  """A (cpu, cuda, tpu) export keeps every branch; called on this CPU it equals the jitted
  layer, whose gradient is the CPU form's."""
  x = jax.random.normal(jax.random.key(3), (2, 9, 11, 4))
  f = jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.square(max_pool.max_pool(x, 3, 2, 1)))))
  exp = jax.export.export(f, platforms=['cpu', 'cuda', 'tpu'])(x)
  assert 'platform_index' in exp.mlir_module() or 'stablehlo.case' in exp.mlir_module()
  (v1, g1), (v2, g2) = f(x), exp.call(x)
  np.testing.assert_array_equal(v1, v2)
  np.testing.assert_array_equal(g1, g2)
