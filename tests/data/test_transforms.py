"""Tests of the per-example numpy augmentations."""

import numpy as np
import pytest

from esnet_jax.data import transforms

IGNORE = 255


def _example(height=24, width=32, seed=0):
  """A random image and a label of a few sparse ids (0, 3, 7, ignore)."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  label = rng.choice(np.array([0, 3, 7, IGNORE], np.uint8), (height, width))
  return image, label


def test_resize_label_is_nearest_and_keeps_ids():
  _, label = _example()
  up = transforms.resize_label(label, (48, 64))
  np.testing.assert_array_equal(up, label.repeat(2, 0).repeat(2, 1))
  for size in [(7, 5), (31, 45), (100, 3)]:
    resized = transforms.resize_label(label, size)
    assert resized.shape == size
    assert resized.dtype == label.dtype
    assert set(np.unique(resized)) <= set(np.unique(label))


def test_resize_image_bilinear_shape_and_dtype():
  image, _ = _example()
  resized = transforms.resize_image(image, (12, 50))
  assert resized.shape == (12, 50, 3)
  assert resized.dtype == np.uint8
  flat = np.full((10, 10, 3), 77, np.uint8)
  np.testing.assert_array_equal(transforms.resize_image(flat, (23, 17)), 77)


def test_random_scale_resizes_both_and_keeps_ids():
  image, label = _example()
  rng = np.random.default_rng(1)
  shapes = set()
  for _ in range(10):
    scaled_image, scaled_label = transforms.random_scale(image, label, rng, (0.5, 2.0))
    assert scaled_image.shape[:2] == scaled_label.shape
    assert 12 <= scaled_label.shape[0] <= 48
    assert set(np.unique(scaled_label)) <= set(np.unique(label))
    shapes.add(scaled_label.shape)
  assert len(shapes) > 1
  same_image, same_label = transforms.random_scale(image, label, rng, (1, 1))
  np.testing.assert_array_equal(same_image, image)
  np.testing.assert_array_equal(same_label, label)


def test_random_crop_is_a_window_of_the_input():
  image, label = _example()
  rng = np.random.default_rng(2)
  for _ in range(5):
    crop_image, crop_label = transforms.random_crop(image, label, rng, (8, 16), ignore_label=IGNORE)
    assert crop_image.shape == (8, 16, 3)
    assert crop_label.shape == (8, 16)
    windows = [
        (top, left)
        for top in range(24 - 8 + 1)
        for left in range(32 - 16 + 1)
        if np.array_equal(image[top : top + 8, left : left + 16], crop_image)
    ]
    assert len(windows) == 1
    top, left = windows[0]
    np.testing.assert_array_equal(label[top : top + 8, left : left + 16], crop_label)


def test_random_crop_pads_small_inputs_with_ignore_and_pad_value():
  image, label = _example(6, 10)
  crop_image, crop_label = transforms.random_crop(
      image,
      label,
      np.random.default_rng(0),
      (16, 16),
      ignore_label=IGNORE,
      image_pad_value=(1, 2, 3),
  )
  assert crop_label.shape == (16, 16)
  np.testing.assert_array_equal(crop_label[:6, :10], label)
  np.testing.assert_array_equal(crop_image[:6, :10], image)
  assert (crop_label[6:] == IGNORE).all() and (crop_label[:, 10:] == IGNORE).all()
  np.testing.assert_array_equal(crop_image[6:, 0], [[1, 2, 3]] * 10)


def test_random_flip_flips_image_and_label_together():
  image, label = _example()
  rng = np.random.default_rng(0)
  flipped_image, flipped_label = transforms.random_flip(image, label, rng, 1.0)
  np.testing.assert_array_equal(flipped_image, image[:, ::-1])
  np.testing.assert_array_equal(flipped_label, label[:, ::-1])
  kept_image, kept_label = transforms.random_flip(image, label, rng, 0.0)
  np.testing.assert_array_equal(kept_image, image)
  np.testing.assert_array_equal(kept_label, label)


def test_colour_jitter():
  image, _ = _example()
  rng = np.random.default_rng(0)
  assert transforms.colour_jitter(image, rng, 0.0) is image
  jittered = transforms.colour_jitter(image, np.random.default_rng(3), 0.4)
  again = transforms.colour_jitter(image, np.random.default_rng(3), 0.4)
  assert jittered.dtype == np.uint8 and jittered.shape == image.shape
  assert not np.array_equal(jittered, image)
  np.testing.assert_array_equal(jittered, again)


def test_normalize():
  image = np.array([[[124, 116, 104], [0, 0, 0]]], np.uint8)
  normalized = transforms.normalize(image)
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized[0, 0], 0, atol=0.01)
  np.testing.assert_allclose(
      normalized[0, 1],
      -np.array(transforms.MEAN_RGB) / np.array(transforms.STD_RGB),
      rtol=1e-6,
  )
  np.testing.assert_allclose(transforms.normalize(image, (0, 0, 0), (2, 2, 2))[0, 0], [62, 58, 52])


def test_pad_to_multiple():
  image, label = _example(17, 25)
  padded_image, padded_label = transforms.pad_to_multiple(image, label, 8, ignore_label=IGNORE)
  assert padded_image.shape == (24, 32, 3)
  assert padded_label.shape == (24, 32)
  np.testing.assert_array_equal(padded_label[:17, :25], label)
  assert (padded_label[17:] == IGNORE).all()
  assert (padded_label[:, 25:] == IGNORE).all()
  assert (padded_image[17:] == 0).all()
  same = transforms.pad_to_multiple(image[:16, :24], label[:16, :24], 8, ignore_label=IGNORE)
  assert same[1].shape == (16, 24)


@pytest.mark.parametrize('value,multiple,expected', [(0, 8, 0), (1, 8, 8), (8, 8, 8), (17, 8, 24)])
def test_round_up(value, multiple, expected):
  assert transforms.round_up(value, multiple) == expected
