"""Tests of the grain train and eval pipelines."""

import itertools

from absl import flags
import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from esnet_jax.data import datasets
from esnet_jax.data import input_pipeline
from esnet_jax.data import transforms

IGNORE = 255


def _config(**dataset_overrides):
  """Small synthetic data: 32x48 scenes, 16x24 crops, global batch 4."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 4
  config.dataset = datasets.default_dataset_config()
  config.dataset.image_size = (32, 48)
  config.dataset.crop_size = (16, 24)
  config.dataset.num_train = 16
  config.dataset.num_eval = 5
  config.dataset.update(dataset_overrides)
  return config


def _write_png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _indexed_folder(root, count, sizes=((8, 8),)):
  """Folder data where image i is the grey level 20 + i, label i % 3."""
  for i in range(count):
    size = sizes[i % len(sizes)]
    _write_png(root / f'images/{i:02d}.png', np.full(size + (3,), 20 + i))
    _write_png(root / f'labels/{i:02d}.png', np.full(size, i % 3))
  return dict(
      name='folder',
      root=str(root),
      image_dir='images',
      label_dir='labels',
      class_names=('a', 'b', 'c'),
      scale_range=(1.0, 1.0),
      flip=False,
      crop_size=(8, 8),
  )


def _indices(batch):
  """Example indices of a batch of ``_indexed_folder`` data ([D, B/D, ...])."""
  pixels = batch['image'][..., 0, 0, 0].reshape(-1)
  grey = pixels * transforms.STD_RGB[0] + transforms.MEAN_RGB[0]
  return [int(round(value)) - 20 for value in grey]


def _assert_batches_equal(first, second):
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])


def _with(config, **top_level):
  """Sets top-level keys (seed, batch_size, ...) of ``config``."""
  config.update(top_level)
  return config


def _train(config, process_index=0, process_count=1, local_device_count=1):
  return input_pipeline.create_train_iterator(
      config,
      process_index=process_index,
      process_count=process_count,
      local_device_count=local_device_count,
  )


def _eval(config, process_index=0, process_count=1, local_device_count=1):
  return input_pipeline.create_eval_iterator(
      config,
      process_index=process_index,
      process_count=process_count,
      local_device_count=local_device_count,
  )


def test_train_batch_shapes_and_dtypes():
  batch = next(_train(_config(), local_device_count=2))
  assert batch['image'].shape == (2, 2, 16, 24, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].shape == (2, 2, 16, 24)
  assert batch['label'].dtype == np.int32
  assert set(np.unique(batch['label'])) <= set(range(8)) | {IGNORE}
  assert -3 < batch['image'].mean() < 3


def test_same_seed_same_batches_other_seed_other_batches():
  first = list(itertools.islice(_train(_config()), 3))
  second = list(itertools.islice(_train(_config()), 3))
  for a, b in zip(first, second):
    _assert_batches_equal(a, b)
  other = next(_train(_with(_config(), seed=1)))
  assert not np.array_equal(first[0]['image'], other['image'])


def test_restoring_the_state_resumes_exactly():
  # 4 examples and batch 4: the saved state sits on an epoch boundary.
  config = _config(num_train=4)
  iterator = _train(config)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = list(itertools.islice(iterator, 2))
  restored = _train(config)
  restored.set_state(state)
  for a, b in zip(expected, itertools.islice(restored, 2)):
    _assert_batches_equal(a, b)


def test_phases_set_each_steps_crop_for_every_process_and_resume_exactly():
  # Steps 0-1: images at half scale, 8x16 crops; step 2: 16x16; later: crop_size 16x24.
  config = _config(phases=((2, 0.5, 8, 16), (3, 1.0, 16, 16)), scale_range=(1.0, 1.0))
  expected = [(8, 16), (8, 16), (16, 16), (16, 24), (16, 24)]
  for process_index in (0, 1):
    iterator = _train(config, process_index, process_count=2, local_device_count=2)
    shapes = [next(iterator)['label'].shape[2:] for _ in range(5)]
    assert shapes == expected
  iterator = _train(config)
  next(iterator)
  state = iterator.get_state()
  rest = list(itertools.islice(iterator, 3))
  assert [b['label'].shape[2:] for b in rest] == expected[1:4]
  restored = _train(config)
  restored.set_state(state)
  for a, b in zip(rest, itertools.islice(restored, 3)):
    _assert_batches_equal(a, b)


def test_a_half_scale_phase_crops_from_the_downscaled_image(tmp_path):
  # Image i of the folder is 16x16 of one grey; at scale 0.5 it is 8x8, so a 16x16 crop
  # of it is padded: a quarter of the crop is labelled, the rest ignored.
  options = _indexed_folder(tmp_path, 4, sizes=((16, 16),))
  options.update(crop_size=(16, 16), phases=((1, 0.5, 16, 16),))
  iterator = _train(_config(**options))
  first, second = next(iterator), next(iterator)
  assert ((first['label'] != IGNORE).mean(axis=(-2, -1)) == 0.25).all()
  assert (second['label'] != IGNORE).all()


def test_orbax_checkpoint_of_the_iterator(tmp_path):
  config = _config()
  iterator = _train(config)
  next(iterator)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = next(iterator)
  restored = _train(config)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.restore(
        1,
        args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)),
    )
  _assert_batches_equal(expected, next(restored))


def test_processes_read_disjoint_shards_reshuffled_every_epoch(tmp_path):
  config = _config(**_indexed_folder(tmp_path, 10))
  epochs = []
  for process in range(2):
    iterator = _train(config, process, 2)
    seen = [i for batch in itertools.islice(iterator, 5) for i in _indices(batch)]
    first, second = seen[:5], seen[5:]
    assert sorted(first) == sorted(second) == list(range(process, 10, 2))
    assert first != second
    epochs.append(set(first))
  assert not epochs[0] & epochs[1]


def test_augmentation_keeps_label_ids_and_alignment(tmp_path):
  """Image halves are red (label 0) and blue (label 2) after any augment."""
  for i in range(4):
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, :16, 0] = 200
    image[:, 16:, 2] = 200
    label = np.zeros((24, 32), np.uint8)
    label[:, 16:] = 2
    _write_png(tmp_path / f'images/{i}.png', image)
    _write_png(tmp_path / f'labels/{i}.png', label)
  config = _config(
      name='folder',
      root=str(tmp_path),
      image_dir='images',
      label_dir='labels',
      class_names=('red', 'unused', 'blue'),
      scale_range=(0.5, 2.0),
      crop_size=(16, 16),
      colour_jitter=0.3,
  )
  batches = list(itertools.islice(_train(config), 8))
  labels = np.stack([batch['label'] for batch in batches])
  images = np.stack([batch['image'] for batch in batches])
  assert set(np.unique(labels)) == {0, 2, IGNORE}
  red_minus_blue = images[..., 0] - images[..., 2]
  assert (red_minus_blue[labels == 0] > 0).mean() > 0.95
  assert (red_minus_blue[labels == 2] < 0).mean() > 0.95


def test_eval_full_resolution_padding_and_process_balance():
  config = _config(image_size=(30, 44), eval_scale=0.5)
  source = datasets.build_source(config.dataset, 'val')
  seen = {}
  for process in range(2):
    data = _eval(config, process, 2)
    assert (data.num_examples, data.num_batches, len(data)) == (5, 2, 2)
    batches = list(data)
    assert len(batches) == 2
    for batch in batches:
      assert batch['image'].shape == (1, 2, 16, 24, 3)
      assert batch['image'].dtype == np.float32
      assert batch['label'].shape == (1, 2, 32, 48)
      assert batch['label'].dtype == np.int32
    labels = np.concatenate([batch['label'][0] for batch in batches])
    for position, label in enumerate(labels):
      seen[process + 2 * position] = label
  assert sorted(seen) == list(range(8))
  for index in range(5):
    np.testing.assert_array_equal(seen[index][:30, :44], source[index]['label'])
    assert (seen[index][30:] == IGNORE).all()
    assert (seen[index][:, 44:] == IGNORE).all()
  for index in range(5, 8):
    assert (seen[index] == IGNORE).all()


def test_eval_at_scale_one_matches_labels_and_repeats(tmp_path):
  config = _with(
      _config(**_indexed_folder(tmp_path, 3, sizes=((6, 8), (10, 12)))),
      batch_size=2,
  )
  data = _eval(config)
  batches = list(data)
  assert data.num_examples == 3 and len(batches) == 2
  for batch in batches:
    assert batch['image'].shape == (1, 2, 16, 16, 3)
    assert batch['label'].shape == (1, 2, 16, 16)
  assert _indices(batches[0]) == [0, 1]
  first = batches[0]['label'][0]
  assert (first[0, :6, :8] == 0).all() and (first[0, 6:] == IGNORE).all()
  assert (first[1, :10, :12] == 1).all() and (first[1, 10:] == IGNORE).all()
  assert (batches[1]['label'][0, 1] == IGNORE).all()
  _assert_batches_equal(batches[0], next(iter(data)))


def test_class_table_of_the_config():
  table = input_pipeline.dataset_class_table(_config())
  assert table.num_classes == 8 and table.ignore_label == IGNORE


def test_worker_processes_match_in_process_loading_and_restore():
  flags.FLAGS.mark_as_parsed()
  config = _config(num_workers=1, num_train=6)
  in_process = list(itertools.islice(_train(_config(num_train=6)), 4))
  iterator = _train(config)
  try:
    for expected in in_process[:2]:
      _assert_batches_equal(expected, next(iterator))
    state = iterator.get_state()
  finally:
    iterator.close()
  restored = _train(config)
  try:
    restored.set_state(state)
    for expected in in_process[2:]:
      _assert_batches_equal(expected, next(restored))
  finally:
    restored.close()
