"""ESNet inference as an ONNX graph, written node by node from the Flax variable tree.

`build_model(variables)` returns the `onnx.ModelProto` of what
`deployed.deployed_network(variables)` computes (float32, dropout off), with
the weights as float32 initializers:

  input  `image`:  float32 (batch, height, width, 3) NHWC, normalised RGB
  output `logits`: float32 (batch, height, width, num_classes) NHWC

batch, height and width are symbolic (`dim_param` 'batch', 'height', 'width')
unless fixed by the arguments. height and width must be multiples of 8 (three
stride-2 stages); any other size fails in ONNX Runtime at a downsampler,
whose conv half rounds an odd size up while its max-pool half rounds it down. A
Transpose to NCHW opens the graph and one back to NHWC closes it; in between
the nodes mirror `esnet_jax.model.esnet`, named after the Flax modules
(`encoder/layers_3/conv`):

- downsampler: 3x3 stride-2 Conv beside a 2x2 stride-2 MaxPool, Concat over
  channels, BatchNorm, Relu. Folded, the conv carries its share of the
  BatchNorm and the pooled channels keep a per-channel affine, a 1x1 Conv;
  the Relu is applied to each half before the Concat (the same values) so
  that it follows its Conv directly, which ONNX Runtime fuses into the
  convolution. The first block (13 + 3 channels) adds two Convs of all 16
  channels instead of concatenating (`_Writer.down`: exact).
- FCU and PFCU: kx1 and 1xk Convs with 'same' padding ((k - 1) / 2 *
  dilation; PFCU dilations 2, 5, 9), Relu after each but the last of a pair,
  the residual Add, Relu. The PFCU sums its branches onto the input one at a
  time, ((x + b2) + b5) + b9, so that each Add takes a Conv output directly.
- upsampler: ConvTranspose 3x3 stride 2 with pads 1 and output_padding 1
  (PyTorch's `ConvTranspose2d(3, 2, 1, 1)`, `esnet.ConvTranspose2x`: output
  exactly twice the input), BatchNorm, Relu; the output layer is a 2x2 stride-2
  ConvTranspose without padding. The Flax kernel (kH, kW, in, out) holds
  PyTorch's scatter taps, so ONNX's (in, out, kH, kW) is a transpose, no flip.

Written for ONNX Runtime's CPU provider: every Relu and residual Add directly
after the Conv it fuses into, channel counts and value shapes that keep its
NCHWc layout from end to end (`_Graph`, `_NCHWC_ALIGN`). A file with a fixed
height and width runs about 5% faster there than a symbolic one: ONNX's shape
inference leaves a Conv's output size unknown when its input's is symbolic, and
ONNX Runtime's memory planner then shares no buffer in place (each Conv that
took in a residual Add first copies it). ONNX Runtime's free-dimension
overrides (`SessionOptions.add_free_dimension_override_by_name`) recover part
of that for a symbolic file used at one size.

BatchNorm is folded by `deployed.deployed_network` (the one place that folds);
with `fold_bn=False` the graph keeps BatchNormalization nodes in inference mode
(the running statistics, epsilon as the model's).

Opset 17 (IR version 8, ONNX 1.12): it has every operator used here in its
current form (Conv, ConvTranspose, MaxPool, BatchNormalization inference-only
since opset 15), and every ONNX Runtime since 1.12 runs it, both onnxruntime
on CPU and onnxruntime-web 1.30 (WebAssembly and WebGPU); a newer opset adds
nothing this graph uses and shuts out older runtimes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from esnet_jax.model import deployed, esnet

OPSET = 17
IR_VERSION = 8
PRODUCER = 'esnet_jax.deploy.onnx_graph'
SYMBOLIC_DIMS = ('batch', 'height', 'width')
# Channel counts ONNX Runtime's NCHWc layout (blocks of 8 or 16 channels by CPU) can
# concatenate without leaving it: the downsamplers' halves are written to be.
_NCHWC_ALIGN = 16

# The layers of `esnet.Encoder` and `esnet.Decoder`, in order: 'down', 'fcu', 'pfcu', 'up'.
ENCODER_LAYERS = ('fcu',) * 3 + ('down',) + ('fcu',) * 2 + ('down',) + ('pfcu',) * 3
DECODER_LAYERS = ('up',) + ('fcu',) * 2 + ('up',) + ('fcu',) * 2


class _Graph:
  """Nodes and initializers of the graph being written; each value is named once.

  Every NCHW value's channel count and spatial stride (1, 2, 4, 8: its H and W are
  the input's divided by it) are tracked, and written as `value_info` with
  symbolic dims ('height/8'). ONNX's own shape inference cannot divide a symbolic
  size, and ONNX Runtime's NCHWc layout pass loses the size at every dilated
  Conv; without these shapes it could not prove that the PFCU's branches and its
  input match, and would not fuse their Adds into the convolutions.
  """

  def __init__(self, epsilon: float, sizes: Sequence[int | None]):
    self.epsilon = epsilon
    self.sizes = sizes  # batch, height, width of the input; None where symbolic
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self.shapes: dict[str, tuple[int, int]] = {}  # value -> (channels, stride)

  def const(self, name: str, value: Any) -> str:
    self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  def node(
      self,
      op: str,
      inputs: Sequence[str],
      name: str,
      *,
      shape: tuple[int, int] | None = None,
      **attributes: Any,
  ) -> str:
    """Add a node whose one output is called `name`, shaped (channels, stride) `shape`
    (default: as its first input)."""
    self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attributes))
    self.shapes[name] = shape or self.shapes[inputs[0]]
    return name

  def dims(self, channels: int, stride: int) -> list[int | str]:
    """NCHW dims of a value: fixed sizes divided by `stride`, or symbolic 'height/8'."""
    batch, height, width = self.sizes
    spatial = [
        size // stride if size is not None else (name if stride == 1 else f'{name}/{stride}')
        for size, name in zip((height, width), SYMBOLIC_DIMS[1:])
    ]
    return [SYMBOLIC_DIMS[0] if batch is None else batch, channels, *spatial]

  def value_info(self) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, self.dims(*shape))
        for name, shape in self.shapes.items()
    ]

  def conv(
      self,
      x: str,
      params: Mapping[str, Any],
      name: str,
      *,
      pads: Sequence[int],
      strides: Sequence[int] = (1, 1),
      dilations: Sequence[int] = (1, 1),
      group: int = 1,
  ) -> str:
    """A Flax `nn.Conv` (kernel (kH, kW, in / group, out)) as an ONNX Conv (out, in / group,
    kH, kW)."""
    kernel = np.asarray(params['kernel'], np.float32)
    weight = self.const(f'{name}/kernel', kernel.transpose(3, 2, 0, 1))
    bias = self.const(f'{name}/bias', params['bias'])
    return self.node(
        'Conv',
        [x, weight, bias],
        name,
        shape=(kernel.shape[3], self.shapes[x][1] * strides[0]),
        kernel_shape=list(kernel.shape[:2]),
        pads=list(pads),
        strides=list(strides),
        dilations=list(dilations),
        group=group,
    )

  def conv_transpose(self, x: str, params: Mapping[str, Any], name: str, padding: int) -> str:
    """`esnet.ConvTranspose2x` (stride 2, PyTorch's padding, output exactly 2x)."""
    kernel = np.asarray(params['kernel'], np.float32)
    k = kernel.shape[0]
    output_padding = 2 * padding + 2 - k  # 2 (n - 1) + op + k - 2 p = 2 n
    weight = self.const(f'{name}/kernel', kernel.transpose(2, 3, 0, 1))
    bias = self.const(f'{name}/bias', params['bias'])
    return self.node(
        'ConvTranspose',
        [x, weight, bias],
        name,
        shape=(kernel.shape[3], self.shapes[x][1] // 2),
        kernel_shape=[k, k],
        strides=[2, 2],
        pads=[padding] * 4,
        output_padding=[output_padding] * 2,
    )

  def batch_norm(
      self, x: str, params: Mapping[str, Any], stats: Mapping[str, Any], name: str
  ) -> str:
    inputs = [
        self.const(f'{name}/scale', params['scale']),
        self.const(f'{name}/bias', params['bias']),
        self.const(f'{name}/mean', stats['mean']),
        self.const(f'{name}/var', stats['var']),
    ]
    return self.node('BatchNormalization', [x, *inputs], name, epsilon=self.epsilon)

  def relu(self, x: str) -> str:
    return self.node('Relu', [x], f'{x}/relu')

  def add(self, a: str, b: str, name: str) -> str:
    return self.node('Add', [a, b], name)


class _Writer:
  """Writes the modules of `esnet.ESNet` into a `_Graph`, reading their variables by path."""

  def __init__(self, graph: _Graph, params: Mapping[str, Any], stats: Mapping[str, Any] | None):
    self.g = graph
    self.params = params
    self.stats = stats  # None: BatchNorm folded into the convolutions.

  def _norm(
      self, x: str, params: Mapping[str, Any], stats: Mapping[str, Any], bn: str, name: str
  ) -> str:
    if self.stats is None:
      return x
    return self.g.batch_norm(x, params[bn], stats[bn], f'{name}/{bn}')

  def factorized(
      self, x: str, params: Mapping[str, Any], conv: str, name: str, dilation: int = 1
  ) -> str:
    """`esnet.factorized_conv`: kx1 (conv3x1_*) or 1xk (conv1x3_*), 'same' padding."""
    k = max(np.shape(params[conv]['kernel'])[:2])
    pad = (k - 1) // 2 * dilation
    vertical = conv.startswith('conv3x1')
    return self.g.conv(
        x,
        params[conv],
        f'{name}/{conv}',
        pads=[pad, 0, pad, 0] if vertical else [0, pad, 0, pad],
        dilations=[dilation, 1] if vertical else [1, dilation],
    )

  def first_pair(self, x: str, params: Mapping[str, Any], stats: Any, name: str) -> str:
    """conv3x1_1, Relu, conv1x3_1, bn1, Relu: how FCU and PFCU begin."""
    y = self.g.relu(self.factorized(x, params, 'conv3x1_1', name))
    y = self.factorized(y, params, 'conv1x3_1', name)
    return self.g.relu(self._norm(y, params, stats, 'bn1', name))

  def fcu(self, x: str, params: Mapping[str, Any], stats: Any, name: str) -> str:
    """`esnet.FCU` (dilation 1, as everywhere in ESNet)."""
    y = self.first_pair(x, params, stats, name)
    y = self.g.relu(self.factorized(y, params, 'conv3x1_2', name))
    y = self._norm(self.factorized(y, params, 'conv1x3_2', name), params, stats, 'bn2', name)
    return self.g.relu(self.g.add(x, y, f'{name}/add'))

  def pfcu(self, x: str, params: Mapping[str, Any], stats: Any, name: str) -> str:
    """`esnet.PFCU`: dilated branches sharing bn2, summed onto the input."""
    y = self.first_pair(x, params, stats, name)
    out = x
    for rate in esnet.PFCU_DILATIONS:
      b = self.g.relu(self.factorized(y, params, f'conv3x1_2{rate}', name, rate))
      b = self.factorized(b, params, f'conv1x3_2{rate}', name, rate)
      if self.stats is not None:
        b = self.g.batch_norm(b, params['bn2'], stats['bn2'], f'{name}/bn2_{rate}')
      out = self.g.add(out, b, f'{name}/add{rate}')
    return self.g.relu(out)

  def down(self, x: str, params: Mapping[str, Any], stats: Any, name: str) -> str:
    """`esnet.DownsamplerBlock`: stride-2 conv beside a max-pool, BN, ReLU."""
    channels, stride = self.g.shapes[x]
    pool = self.g.node(
        'MaxPool',
        [x],
        f'{name}/pool',
        shape=(channels, 2 * stride),
        kernel_shape=[2, 2],
        strides=[2, 2],
    )
    if self.stats is not None:
      conv = self.g.conv(x, params['conv'], f'{name}/conv', pads=[1, 1, 1, 1], strides=[2, 2])
      out = (self.g.shapes[conv][0] + channels, 2 * stride)
      y = self.g.node('Concat', [conv, pool], f'{name}/concat', shape=out, axis=1)
      return self.g.relu(self.g.batch_norm(y, params['bn'], stats['bn'], f'{name}/bn'))
    kernel = np.asarray(params['conv']['kernel'], np.float32)
    scale = np.asarray(params['pool_scale'], np.float32)
    shift = np.asarray(params['pool_bias'], np.float32)
    n = kernel.shape[-1]
    if n % _NCHWC_ALIGN == 0:
      # The pooled channels' affine as a 1x1 depthwise Conv: ONNX Runtime's NCHWc layout
      # takes it (a Mul and Add by constants it does not), so the block's output and the
      # residual Adds after it stay in that layout and fuse into the convolutions.
      conv = self.g.conv(x, params['conv'], f'{name}/conv', pads=[1, 1, 1, 1], strides=[2, 2])
      affine = {'kernel': scale.reshape(1, 1, 1, -1), 'bias': shift}
      pool = self.g.conv(pool, affine, f'{name}/pool_affine', pads=[0, 0, 0, 0], group=channels)
      relus = [self.g.relu(conv), self.g.relu(pool)]
      return self.g.node(
          'Concat', relus, f'{name}/concat', shape=(n + channels, 2 * stride), axis=1
      )
    # The first block's halves (13 and 3 channels) are not whole NCHWc blocks, which ONNX
    # Runtime's Concat needs. Instead the conv writes all n + channels outputs (zero
    # kernel and bias in the pooled ones) and a 1x1 conv puts the pooled channels' affine
    # into theirs (zero elsewhere): their sum is the concatenation exactly, each output
    # a value plus an exact zero, and it stays in the NCHWc layout.
    total = n + channels
    padded = {
        'kernel': np.concatenate([kernel, np.zeros(kernel.shape[:3] + (channels,))], -1),
        'bias': np.concatenate(
            [np.asarray(params['conv']['bias'], np.float32), np.zeros(channels)]
        ),
    }
    conv = self.g.conv(x, padded, f'{name}/conv', pads=[1, 1, 1, 1], strides=[2, 2])
    placed = np.zeros((1, 1, channels, total), np.float32)
    placed[0, 0, np.arange(channels), n + np.arange(channels)] = scale
    affine = {'kernel': placed, 'bias': np.concatenate([np.zeros(n), shift])}
    pool = self.g.conv(pool, affine, f'{name}/pool_affine', pads=[0, 0, 0, 0])
    return self.g.relu(self.g.add(conv, pool, f'{name}/concat'))

  def up(self, x: str, params: Mapping[str, Any], stats: Any, name: str) -> str:
    """`esnet.UpsamplerBlock`: 3x3 stride-2 transposed conv, BN, ReLU."""
    y = self.g.conv_transpose(x, params['conv'], f'{name}/conv', padding=1)
    return self.g.relu(self._norm(y, params, stats, 'bn', name))

  def stack(self, x: str, part: str, layers: Sequence[str]) -> str:
    params = self.params[part]
    stats = (self.stats or {}).get(part, {})
    for i, kind in enumerate(layers):
      key = f'layers_{i}'
      x = getattr(self, kind)(x, params[key], stats.get(key, {}), f'{part}/{key}')
    return x

  def network(self, x: str) -> str:
    """`esnet.ESNet` on NCHW `x`, the encoder-only head left out."""
    stats = self.stats or {}
    x = self.down(
        x,
        self.params['encoder']['initial_block'],
        stats.get('encoder', {}).get('initial_block', {}),
        'encoder/initial_block',
    )
    x = self.stack(x, 'encoder', ENCODER_LAYERS)
    x = self.stack(x, 'decoder', DECODER_LAYERS)
    return self.g.conv_transpose(
        x, self.params['decoder']['output_conv'], 'decoder/output_conv', padding=0
    )


def build_model(
    variables: Mapping[str, Any],
    *,
    fold_bn: bool = True,
    batch: int | None = None,
    height: int | None = None,
    width: int | None = None,
    input_name: str = 'image',
    output_name: str = 'logits',
) -> onnx.ModelProto:
  """The ONNX model of ESNet inference on `variables` (`{'params', 'batch_stats'}`).

  Args:
    variables: the trained variables of an `ESNet`.
    fold_bn: fold BatchNorm into the convolutions (`deployed.deployed_network`);
      False keeps BatchNormalization nodes.
    batch, height, width: fix that input dimension; None (default) leaves it
      symbolic. height and width are multiples of 8 either way; fixed sizes are
      not checked here (`export_options.export_size_checks` does for the exporter).
    input_name, output_name: the graph's input and output.

  Returns:
    The model (opset `OPSET`), passed by `onnx.checker.check_model` and ONNX's
    strict shape inference.
  """
  model, network_variables = deployed.deployed_network(variables, kernels='xla', fold_bn=fold_bn)
  num_classes = int(np.shape(network_variables['params']['decoder']['output_conv']['bias'])[0])
  graph = _Graph(float(model.bn_epsilon), (batch, height, width))
  writer = _Writer(
      graph, network_variables['params'], None if fold_bn else network_variables['batch_stats']
  )
  graph.shapes[input_name] = (3, 1)
  x = graph.node('Transpose', [input_name], 'to_nchw', perm=[0, 3, 1, 2])
  y = writer.network(x)
  graph.nodes.append(
      helper.make_node('Transpose', [y], [output_name], name='to_nhwc', perm=[0, 2, 3, 1])
  )
  del graph.shapes[input_name]

  def nhwc(name: str, channels: int) -> onnx.ValueInfoProto:
    n, c, h, w = graph.dims(channels, 1)
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [n, h, w, c])

  proto = helper.make_model(
      helper.make_graph(
          graph.nodes,
          'esnet',
          [nhwc(input_name, 3)],
          [nhwc(output_name, num_classes)],
          initializer=graph.initializers,
          value_info=graph.value_info(),
      ),
      opset_imports=[helper.make_opsetid('', OPSET)],
      ir_version=IR_VERSION,
      producer_name=PRODUCER,
      doc_string=(
          f'ESNet, {num_classes} classes: normalised float32 NHWC RGB images -> logits NHWC; '
          'height and width multiples of 8.'
      ),
  )
  onnx.checker.check_model(proto, full_check=True)
  onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
  return proto
