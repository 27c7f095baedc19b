"""Procedurally generated street scenes: segmentation data without downloads.

Every example is drawn on the fly from ``(seed, index)``: a sky, a row of
buildings with windows, grass and trees, a road in perspective with lane
markings, sidewalks with tiles, and poles, cars and people standing on the
ground, sized by their distance to the horizon and drawn far to near. Colours,
textures, layout, illumination and sensor noise vary per example, so a network
has to combine colour, texture, shape and position to segment the scenes: it
learns them in minutes, but a per-pixel colour lookup does not solve them.
A few examples contain an unlabelled patch (the ignore id) so that the ignore
path of losses and metrics is exercised too.
"""

from __future__ import annotations

from collections.abc import Sequence
import zlib

import ml_collections
import numpy as np
from PIL import Image

from esnet_jax.data.datasets import base
from esnet_jax.data.datasets import registry

SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, POLE, CAR, PERSON = range(8)

SYNTHETIC_CLASSES = base.ClassTable(
    names=(
        'sky',
        'building',
        'road',
        'sidewalk',
        'vegetation',
        'pole',
        'car',
        'person',
    ),
    colours=(
        (70, 130, 180),
        (70, 70, 70),
        (128, 64, 128),
        (244, 35, 232),
        (107, 142, 35),
        (153, 153, 153),
        (0, 0, 142),
        (220, 20, 60),
    ),
    ignore_label=255,
)

# Facade base colours: beige, brick, grey, white, ochre.
_FACADES = np.array(
    [[200, 180, 150], [150, 70, 50], [120, 120, 125], [215, 210, 200], [190, 140, 60]],
    np.float32,
)
_SKIN = np.array(
    [[240, 200, 170], [200, 150, 110], [140, 95, 60], [90, 60, 40]],
    np.float32,
)


class SyntheticSource(base.SegmentationSource):
  """A split of synthetic street scenes, rendered when an example is read."""

  class_table = SYNTHETIC_CLASSES

  def __init__(self, num_examples: int, image_size: Sequence[int], split: str):
    """Describes the split; nothing is rendered until ``__getitem__``.

    Args:
      num_examples: Number of examples in the split.
      image_size: (height, width) of every example; at least 16x16.
      split: Split name; the scenes are seeded by it, so differently named
        splits hold different scenes.
    """
    if num_examples <= 0:
      raise base.DatasetError(
          f'Synthetic split {split!r} is empty: it needs a positive number of '
          f'examples, got {num_examples}.'
      )
    height, width = (int(side) for side in image_size)
    if height < 16 or width < 16:
      raise base.DatasetError(f'Synthetic image_size must be at least (16, 16), got {image_size}.')
    self._num_examples = num_examples
    self._size = (height, width)
    self._seed = zlib.crc32(split.encode())

  def __len__(self) -> int:
    return self._num_examples

  def __getitem__(self, index: int) -> base.Example:
    if not 0 <= index < self._num_examples:
      raise IndexError(f'Index {index} out of range [0, {self._num_examples}).')
    rng = np.random.default_rng([self._seed, index])
    image, label = render_scene(rng, self._size)
    return {'image': image, 'label': label}

  def __repr__(self) -> str:
    return f'SyntheticSource({self._num_examples} examples of {self._size})'

  @property
  def max_size(self) -> tuple[int, int]:
    return self._size


@registry.register('synthetic', class_table=SYNTHETIC_CLASSES)
def source_from_config(dataset_cfg: ml_collections.ConfigDict, split: str) -> SyntheticSource:
  """The ``synthetic`` dataset's registered builder: ``SyntheticSource`` from the config.

  The train split has ``num_train`` scenes, any other ``num_eval``, all of ``image_size``.
  """
  is_train = split == dataset_cfg.train_split
  return SyntheticSource(
      dataset_cfg.num_train if is_train else dataset_cfg.num_eval,
      dataset_cfg.image_size,
      split,
  )


def render_scene(rng: np.random.Generator, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Draws one street scene.

  Args:
    rng: Source of every random choice; the same state gives the same scene.
    size: (height, width).

  Returns:
    (image uint8 [H, W, 3], label uint8 [H, W]).
  """
  scene = _Canvas(rng, size)
  scene.sky()
  scene.grass()
  scene.buildings()
  scene.ground()
  scene.objects()
  scene.unlabelled_patch()
  return scene.finish()


class _Canvas:
  """Image and label being painted, with the scene's perspective geometry.

  The ground plane is parametrised by ``u = (x - vanishing_x) / depth`` (the
  lateral position, road half-width = 1) and ``depth = y - horizon`` (pixels
  below the horizon, proportional to 1 / distance). An object of real size
  ``s`` (in road half-widths) standing at ``depth`` is ``s * depth`` pixels
  tall.
  """

  def __init__(self, rng: np.random.Generator, size: Sequence[int]):
    self.rng = rng
    self.height, self.width = size
    self.image = np.zeros((self.height, self.width, 3), np.float32)
    self.label = np.zeros((self.height, self.width), np.uint8)
    self.yy, self.xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
    self.horizon = self.height * rng.uniform(0.3, 0.5)
    self.vanishing_x = self.width * rng.uniform(0.3, 0.7)
    # Road half-width at the bottom edge, as a fraction of the image width.
    self.road_slope = self.width * rng.uniform(0.25, 0.6) / (self.height - self.horizon)
    self.sidewalk_width = rng.uniform(0.35, 0.8)  # In road half-widths.

  def paint(self, mask, colour, label, window=(slice(None), slice(None))):
    """Paints ``colour`` ([h, w, 3] or [3]) and ``label`` where mask is set."""
    image = self.image[window]
    image[mask] = colour[mask] if colour.ndim == 3 else colour
    self.label[window][mask] = label

  def texture(self, shape, base_colour, *, fine, coarse, cell=8):
    """``base_colour`` with luminance noise: per-pixel and smooth blotches."""
    height, width = shape
    noise = fine * self.rng.standard_normal((height, width), np.float32)
    if coarse:
      noise += coarse * _smooth_noise(self.rng, height, width, cell)
    return base_colour + noise[..., None]

  def jitter(self, colour, amount):
    return np.clip(colour + self.rng.uniform(-amount, amount, 3), 0, 255)

  def sky(self):
    if self.rng.random() < 0.25:  # Overcast.
      top = self.jitter(np.array([175, 178, 185], np.float32), 20)
      bottom = self.jitter(top + 20, 10)
    else:
      top = self.jitter(np.array([60, 110, 200], np.float32), 30)
      bottom = self.jitter(np.array([150, 190, 235], np.float32), 20)
    t = np.clip(self.yy / max(self.horizon, 1.0), 0, 1)[..., None]
    colour = (1 - t) * top + t * bottom
    clouds = _smooth_noise(self.rng, self.height, self.width, 16)
    colour += 18 * np.maximum(clouds, 0)[..., None]
    self.paint(np.ones_like(self.label, bool), colour, SKY)

  def grass(self):
    mask = self.yy >= self.horizon
    colour = self.texture(
        mask.shape,
        self.jitter(np.array([80, 130, 50], np.float32), 25),
        fine=22,
        coarse=12,
        cell=4,
    )
    self.paint(mask, colour, VEGETATION)

  def buildings(self):
    """A row of facades standing on the horizon, with window grids."""
    x = -self.rng.uniform(0, 0.1) * self.width
    while x < self.width:
      facade_width = self.width * self.rng.uniform(0.08, 0.3)
      left, right = int(max(x, 0)), int(min(x + facade_width, self.width))
      x += facade_width
      if right <= left or self.rng.random() < 0.2:  # A gap in the row.
        continue
      top = int(self.horizon * self.rng.uniform(0.05, 0.8))
      bottom = int(self.horizon + (self.height - self.horizon) * 0.3)
      window = (slice(top, bottom), slice(left, right))
      shape = (bottom - top, right - left)
      facade = _FACADES[self.rng.integers(len(_FACADES))]
      colour = self.texture(shape, self.jitter(facade, 25), fine=5, coarse=8, cell=6)
      period = self.rng.uniform(5, 12, size=2)
      fill = self.rng.uniform(0.4, 0.7, size=2)
      rows = ((self.yy[window] - top) / period[0]) % 1 < fill[0]
      cols = ((self.xx[window] - left) / period[1]) % 1 < fill[1]
      glass = self.jitter(np.array([60, 75, 95], np.float32), 25)
      colour[rows & cols] = glass
      self.paint(np.ones(shape, bool), colour, BUILDING, window)

  def ground(self):
    """Sidewalks and road in perspective (drawn over the building bases)."""
    depth = np.maximum(self.yy - self.horizon, 1e-3)
    u = (self.xx - self.vanishing_x) / (depth * self.road_slope)
    below = self.yy > self.horizon + 1
    sidewalk = below & (np.abs(u) < 1 + self.sidewalk_width)
    road = below & (np.abs(u) < 1)
    # Tiles: a grid in ground coordinates (lateral u, distance 1 / depth).
    distance = self.height / depth
    tiles = ((u * 4) % 1 < 0.08) | ((distance * 1.5) % 1 < 0.1)
    paving = self.jitter(
        np.array([175, 165, 160], np.float32)
        if self.rng.random() < 0.6
        else np.array([170, 120, 110], np.float32),
        20,
    )
    colour = self.texture(depth.shape, paving, fine=8, coarse=6)
    colour[tiles] *= 0.7
    self.paint(sidewalk, colour, SIDEWALK)
    asphalt = self.jitter(np.full(3, self.rng.uniform(60, 110), np.float32), 8)
    colour = self.texture(depth.shape, asphalt, fine=10, coarse=8, cell=6)
    dashes = (np.abs(u) < 0.03) & ((distance * 0.5) % 1 < 0.5)
    colour[dashes] = self.jitter(np.array([225, 225, 215], np.float32), 15)
    self.paint(road, colour, ROAD)

  def objects(self):
    """Trees, poles, cars and people standing on the ground, far to near."""
    placed = []
    for count, draw, minimum in (
        (self.rng.integers(0, 4), self._tree, 0.1),
        (self.rng.integers(0, 4), self._pole, 0.1),
        (self.rng.integers(0, 5), self._car, 0.05),
        (self.rng.integers(0, 4), self._person, 0.15),
    ):
      placed += [(self._ground_depth(minimum), draw) for _ in range(count)]
    for depth, draw in sorted(placed, key=lambda item: item[0]):
      draw(depth)

  def unlabelled_patch(self):
    """Sometimes an unlabelled rectangle of clutter (label = ignore id)."""
    if self.rng.random() >= 0.3:
      return
    height = int(self.height * self.rng.uniform(0.05, 0.15))
    width = int(self.width * self.rng.uniform(0.05, 0.15))
    top = self.rng.integers(0, self.height - height)
    left = self.rng.integers(0, self.width - width)
    window = (slice(top, top + height), slice(left, left + width))
    colour = self.texture((height, width), self.rng.uniform(0, 255, 3), fine=30, coarse=30)
    self.paint(
        np.ones((height, width), bool),
        colour,
        SYNTHETIC_CLASSES.ignore_label,
        window,
    )

  def finish(self) -> tuple[np.ndarray, np.ndarray]:
    """Applies illumination, colour cast and sensor noise; returns uint8."""
    gain = self.rng.uniform(0.7, 1.3) * self.rng.uniform(0.9, 1.1, 3)
    noise = self.rng.uniform(2, 8) * self.rng.standard_normal(self.image.shape, np.float32)
    image = np.clip(self.image * gain + noise, 0, 255).astype(np.uint8)
    return image, self.label

  def _ground_depth(self, minimum: float) -> float:
    """Depth of a random ground row at least ``minimum`` of the way down."""
    span = self.height - self.horizon
    return span * self.rng.uniform(minimum, 1.0) ** 0.7

  def _lateral(self, depth: float, low: float, high: float) -> float:
    """x of a random ground point with |u| in [low, high] at ``depth``."""
    side = self.rng.choice((-1.0, 1.0))
    u = side * self.rng.uniform(low, high)
    return self.vanishing_x + u * depth * self.road_slope

  def _box(self, centre_x, bottom, width, height):
    """Clipped window of a box standing at (centre_x, bottom), or None."""
    top = int(round(bottom - height))
    left = int(round(centre_x - width / 2))
    rows = slice(max(top, 0), min(int(round(bottom)), self.height))
    cols = slice(max(left, 0), min(left + max(int(round(width)), 1), self.width))
    if rows.start >= rows.stop or cols.start >= cols.stop:
      return None
    return rows, cols

  def _ellipse(self, window, centre_x, centre_y, radius_x, radius_y):
    dx = (self.xx[window] - centre_x) / max(radius_x, 0.5)
    dy = (self.yy[window] - centre_y) / max(radius_y, 0.5)
    return dx * dx + dy * dy <= 1

  def _tree(self, depth):
    """A trunk and a leafy canopy beside the sidewalk."""
    scale = depth * self.road_slope
    x = self._lateral(depth, 1 + self.sidewalk_width, 2 + self.sidewalk_width)
    bottom = self.horizon + depth
    height = scale * self.rng.uniform(1.5, 3.0)
    radius = scale * self.rng.uniform(0.4, 0.8)
    trunk = self._box(x, bottom, scale * 0.12, height - radius)
    if trunk:
      bark = self.jitter(np.array([90, 65, 40], np.float32), 15)
      colour = self.texture(self.label[trunk].shape, bark, fine=10, coarse=0)
      self.paint(np.ones(colour.shape[:2], bool), colour, VEGETATION, trunk)
    canopy = self._box(x, bottom - height + 2 * radius, 2 * radius, 2 * radius)
    if canopy:
      mask = self._ellipse(canopy, x, bottom - height + radius, radius, radius * 0.9)
      leaves = self.jitter(np.array([60, 110, 40], np.float32), 25)
      colour = self.texture(mask.shape, leaves, fine=30, coarse=15, cell=3)
      self.paint(mask, colour, VEGETATION, canopy)

  def _pole(self, depth):
    """A thin metal pole on the sidewalk, sometimes with a lamp arm."""
    scale = depth * self.road_slope
    x = self._lateral(depth, 1.05, 1 + self.sidewalk_width * 0.8)
    bottom = self.horizon + depth
    height = scale * self.rng.uniform(1.5, 3.0)
    window = self._box(x, bottom, max(scale * 0.05, 1.5), height)
    if window is None:
      return
    metal = self.jitter(np.array([110, 110, 105], np.float32), 30)
    shade = np.linspace(0.8, 1.2, window[1].stop - window[1].start)
    colour = self.texture(self.label[window].shape, metal, fine=4, coarse=0)
    self.paint(
        np.ones(colour.shape[:2], bool),
        colour * shade[None, :, None],
        POLE,
        window,
    )

  def _car(self, depth):
    """A car on the road: body, cabin with windows and two wheels."""
    scale = depth * self.road_slope
    x = self._lateral(depth, 0.1, 0.7)
    bottom = self.horizon + depth
    width = scale * self.rng.uniform(0.45, 0.6)
    height = scale * self.rng.uniform(0.3, 0.45)
    paint = self.rng.uniform(20, 235, 3).astype(np.float32)
    body = self._box(x, bottom - height * 0.1, width, height * 0.55)
    if body is None:
      return
    colour = self.texture(self.label[body].shape, paint, fine=4, coarse=6)
    self.paint(np.ones(colour.shape[:2], bool), colour, CAR, body)
    cabin = self._box(x, bottom - height * 0.6, width * 0.75, height * 0.4)
    if cabin:
      colour = self.texture(self.label[cabin].shape, paint, fine=4, coarse=0)
      rows = self.yy[cabin] > bottom - height * 0.95
      cols = np.abs(self.xx[cabin] - x) < width * 0.33
      colour[rows & cols] = self.jitter(np.array([50, 60, 75], np.float32), 15)
      self.paint(np.ones(colour.shape[:2], bool), colour, CAR, cabin)
    radius = height * 0.15
    for side in (-1, 1):
      wheel_x = x + side * width * 0.33
      wheel = self._box(wheel_x, bottom, 2 * radius, 2 * radius)
      if wheel:
        mask = self._ellipse(wheel, wheel_x, bottom - radius, radius, radius)
        self.paint(mask, np.array([25, 25, 25], np.float32), CAR, wheel)

  def _person(self, depth):
    """A pedestrian on the sidewalk: legs, torso and head."""
    scale = depth * self.road_slope
    x = self._lateral(depth, 1.05, 1 + self.sidewalk_width * 0.9)
    bottom = self.horizon + depth
    height = scale * self.rng.uniform(0.45, 0.6)
    width = height * 0.3
    legs = self._box(x, bottom, width * 0.7, height * 0.45)
    if legs:
      trousers = self.jitter(np.array([50, 50, 70], np.float32), 30)
      colour = self.texture(self.label[legs].shape, trousers, fine=6, coarse=0)
      self.paint(np.ones(colour.shape[:2], bool), colour, PERSON, legs)
    torso = self._box(x, bottom - height * 0.45, width, height * 0.38)
    if torso:
      shirt = self.rng.uniform(20, 235, 3).astype(np.float32)
      colour = self.texture(self.label[torso].shape, shirt, fine=6, coarse=0)
      self.paint(np.ones(colour.shape[:2], bool), colour, PERSON, torso)
    radius = height * 0.09
    centre_y = bottom - height + radius
    head = self._box(x, centre_y + radius, 2 * radius, 2 * radius)
    if head:
      mask = self._ellipse(head, x, centre_y, radius * 0.85, radius)
      skin = self.jitter(_SKIN[self.rng.integers(len(_SKIN))], 10)
      self.paint(mask, skin, PERSON, head)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
  """Roughly unit-variance noise that varies smoothly over ``cell`` pixels."""
  grid = rng.standard_normal((height // cell + 2, width // cell + 2), np.float32)
  resized = Image.fromarray(grid).resize((width, height), Image.BILINEAR)
  return np.asarray(resized)
