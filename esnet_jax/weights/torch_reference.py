"""The original PyTorch ESNet, for weight-conversion parity and side-by-side timing.

Written from the paper's layer facts and the authors' published layer
definitions (ERFNet-style `Encoder`/`Decoder` split with an encoder-only head),
so that its `state_dict()` keys are exactly the original's. PyTorch is an
optional dependency (`pip install "esnet-jax[torch]"`); importing this module
without it raises ImportError.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esnet_jax.weights import convert

from esnet_jax.model.esnet import num_classes_of


class DownsamplerBlock(nn.Module):

  def __init__(self, ninput: int, noutput: int):
    super().__init__()
    self.conv = nn.Conv2d(ninput, noutput - ninput, (3, 3), stride=2, padding=1, bias=True)
    self.pool = nn.MaxPool2d(2, stride=2)
    self.bn = nn.BatchNorm2d(noutput, eps=1e-3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class UpsamplerBlock(nn.Module):

  def __init__(self, ninput: int, noutput: int):
    super().__init__()
    self.conv = nn.ConvTranspose2d(
        ninput, noutput, 3, stride=2, padding=1, output_padding=1, bias=True
    )
    self.bn = nn.BatchNorm2d(noutput, eps=1e-3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.bn(self.conv(x)))


class FCU(nn.Module):

  def __init__(self, chann: int, kernel_size: int, dropprob: float, dilated: int = 1):
    super().__init__()
    pad = (kernel_size - 1) // 2
    self.conv3x1_1 = nn.Conv2d(chann, chann, (kernel_size, 1), padding=(pad, 0), bias=True)
    self.conv1x3_1 = nn.Conv2d(chann, chann, (1, kernel_size), padding=(0, pad), bias=True)
    self.bn1 = nn.BatchNorm2d(chann, eps=1e-3)
    self.conv3x1_2 = nn.Conv2d(
        chann, chann, (kernel_size, 1), padding=(pad * dilated, 0), bias=True, dilation=(dilated, 1)
    )
    self.conv1x3_2 = nn.Conv2d(
        chann, chann, (1, kernel_size), padding=(0, pad * dilated), bias=True, dilation=(1, dilated)
    )
    self.bn2 = nn.BatchNorm2d(chann, eps=1e-3)
    self.dropout = nn.Dropout2d(dropprob)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1x3_1(F.relu(self.conv3x1_1(x)))))
    y = self.bn2(self.conv1x3_2(F.relu(self.conv3x1_2(y))))
    if self.dropout.p != 0:
      y = self.dropout(y)
    return F.relu(x + y)


class PFCU(nn.Module):

  def __init__(self, chann: int):
    super().__init__()
    self.conv3x1_1 = nn.Conv2d(chann, chann, (3, 1), padding=(1, 0), bias=True)
    self.conv1x3_1 = nn.Conv2d(chann, chann, (1, 3), padding=(0, 1), bias=True)
    self.bn1 = nn.BatchNorm2d(chann, eps=1e-3)
    for d in (2, 5, 9):
      setattr(
          self,
          f'conv3x1_2{d}',
          nn.Conv2d(chann, chann, (3, 1), padding=(d, 0), bias=True, dilation=(d, 1)),
      )
      setattr(
          self,
          f'conv1x3_2{d}',
          nn.Conv2d(chann, chann, (1, 3), padding=(0, d), bias=True, dilation=(1, d)),
      )
    self.bn2 = nn.BatchNorm2d(chann, eps=1e-3)
    self.dropout = nn.Dropout2d(0.3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1x3_1(F.relu(self.conv3x1_1(x)))))
    out = x
    for d in (2, 5, 9):
      b = getattr(self, f'conv1x3_2{d}')(F.relu(getattr(self, f'conv3x1_2{d}')(y)))
      out = out + self.dropout(self.bn2(b))
    return F.relu(out)


class Encoder(nn.Module):

  def __init__(self):
    super().__init__()
    self.initial_block = DownsamplerBlock(3, 16)
    self.layers = nn.ModuleList(
        [FCU(16, 3, 0.03) for _ in range(3)]
        + [DownsamplerBlock(16, 64)]
        + [FCU(64, 5, 0.03) for _ in range(2)]
        + [DownsamplerBlock(64, 128)]
        + [PFCU(128) for _ in range(3)]
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.initial_block(x)
    for layer in self.layers:
      x = layer(x)
    return x


class Decoder(nn.Module):

  def __init__(self, num_classes: int):
    super().__init__()
    self.layers = nn.ModuleList(
        [UpsamplerBlock(128, 64)]
        + [FCU(64, 5, 0) for _ in range(2)]
        + [UpsamplerBlock(64, 16)]
        + [FCU(16, 3, 0) for _ in range(2)]
    )
    self.output_conv = nn.ConvTranspose2d(
        16, num_classes, 2, stride=2, padding=0, output_padding=0, bias=True
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for layer in self.layers:
      x = layer(x)
    return self.output_conv(x)


class ESNet(nn.Module):
  """`ESNet(num_classes)(x_nchw, only_encode=False)`, as in the original."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.encoder = Encoder()
    self.encoder_output_conv = nn.Conv2d(128, num_classes, 1, bias=True)
    self.decoder = Decoder(num_classes)

  def forward(self, x: torch.Tensor, only_encode: bool = False) -> torch.Tensor:
    features = self.encoder(x)
    if only_encode:
      return self.encoder_output_conv(features)
    return self.decoder(features)


def from_variables(
    variables: Mapping[str, Any], memory_format: torch.memory_format = torch.contiguous_format
) -> ESNet:
  """The original network holding these Flax variables, in eval mode.

  The weights go through `esnet_jax.weights.convert.flax_to_torch` and are loaded
  strictly, so a missing or misshapen tensor fails here, not as wrong output.
  """
  network = ESNet(num_classes_of(variables))
  network.load_state_dict(
      {k: torch.from_numpy(np.array(v)) for k, v in convert.flax_to_torch(variables).items()},
      strict=True,
  )
  return network.eval().to(memory_format=memory_format)
