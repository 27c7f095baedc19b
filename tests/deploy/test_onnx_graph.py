"""The ONNX graph builder: a checked opset-17 model, symbolic sizes, the computation of the
Flax model (BatchNorm folded or kept) and of the original PyTorch network."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_variables
from esnet_jax.inference import segmenter

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
from esnet_jax.deploy import onnx_graph  # pylint: disable=g-import-not-at-top  # needs onnx

NUM_CLASSES = 5


@pytest.fixture(scope='module')
def variables():
  return random_variables(NUM_CLASSES, seed=1)


@pytest.fixture(scope='module')
def model(variables):
  return onnx_graph.build_model(variables)


def _session(model) -> ort.InferenceSession:
  return ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])


def _dims(value_info) -> list:
  return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_model_is_checked_opset_17_with_float32_initializers(model):
  onnx.checker.check_model(model, full_check=True)
  assert [(o.domain, o.version) for o in model.opset_import] == [('', onnx_graph.OPSET)]
  assert onnx_graph.OPSET == 17 and model.ir_version == onnx_graph.IR_VERSION == 8
  assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}
  ops = {node.op_type for node in model.graph.node}
  assert ops == {'Transpose', 'Conv', 'MaxPool', 'Concat', 'Relu', 'Add', 'ConvTranspose'}


def test_batch_height_and_width_are_symbolic(model):
  assert [i.name for i in model.graph.input] == ['image']
  assert [o.name for o in model.graph.output] == ['logits']
  assert _dims(model.graph.input[0]) == ['batch', 'height', 'width', 3]
  assert _dims(model.graph.output[0]) == ['batch', 'height', 'width', NUM_CLASSES]
  # Inner values carry their size too, in eighths at the bottleneck (NCHW).
  shapes = {v.name: _dims(v) for v in model.graph.value_info}
  assert shapes['encoder/layers_9/add9/relu'] == ['batch', 128, 'height/8', 'width/8']
  assert shapes['decoder/layers_3/conv'] == ['batch', 16, 'height/2', 'width/2']


def test_fixed_sizes_where_given(variables):
  fixed = onnx_graph.build_model(variables, batch=2, height=32, width=48)
  assert _dims(fixed.graph.input[0]) == [2, 32, 48, 3]
  assert _dims(fixed.graph.output[0]) == [2, 32, 48, NUM_CLASSES]
  shapes = {v.name: _dims(v) for v in fixed.graph.value_info}
  assert shapes['encoder/layers_9/add9/relu'] == [2, 128, 4, 6]


@pytest.mark.parametrize('fold_bn', [True, False])
def test_onnxruntime_computes_the_deployed_network(variables, fold_bn):
  graph = onnx_graph.build_model(variables, fold_bn=fold_bn)
  batch_norms = sum(node.op_type == 'BatchNormalization' for node in graph.graph.node)
  # Unfolded: 3 downsamplers, 2 in each of 9 FCUs, bn1 and the shared bn2 on each of 3
  # branches in 3 PFCUs, 2 upsamplers.
  assert batch_norms == (0 if fold_bn else 3 + 2 * 9 + 3 * (1 + 3) + 2)
  model, deployed = segmenter.deployed_network(variables, kernels='xla', fold_bn=fold_bn)
  x = np.random.default_rng(2).normal(size=(2, 40, 56, 3)).astype(np.float32)
  logits = _session(graph).run(['logits'], {'image': x})[0]
  np.testing.assert_allclose(logits, model.apply(deployed, x, train=False), atol=1e-4, rtol=0)


def test_onnxruntime_computes_the_original_pytorch_network(reference_variables, parity):
  """The 19-class reference weights against the original network's own logits (the fixture
  `parity_c19.npz` was made with PyTorch), without PyTorch here."""
  x = np.ascontiguousarray(parity['input_nchw'].transpose(0, 2, 3, 1))
  logits = _session(onnx_graph.build_model(reference_variables)).run(['logits'], {'image': x})[0]
  np.testing.assert_allclose(logits.transpose(0, 3, 1, 2), parity['logits_nchw'], atol=1e-4)


def test_a_size_not_a_multiple_of_8_fails_in_onnxruntime(model):
  x = np.zeros((1, 36, 48, 3), np.float32)
  with pytest.raises(Exception, match='Concat'):
    _session(model).run(['logits'], {'image': x})
