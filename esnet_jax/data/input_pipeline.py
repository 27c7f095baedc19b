"""Grain input pipelines for training and evaluation.

Training (``create_train_iterator``), per process::

  source -> [process_index::process_count] -> shuffle (new order every epoch)
  -> repeat forever -> random_map(scale, crop, flip, colour jitter)
  -> map(normalize) -> batch(per-process batch) -> [devices, per-device, ...]
  -> iterator (threads, or ``num_workers`` processes)

yielding ``{'image': float32 [D, B/D, H, W, 3], 'label': int32 [D, B/D, H, W]}``
with D = local devices and B = per-process batch. Everything random is a
function of ``config.seed``, the process index and the step, so two iterators
with the same configuration yield identical batches.

Evaluation (``create_eval_iterator``) yields the eval split once, in order, at
full label resolution: labels keep their original size, images are resized by
``eval_scale``; both are padded (bottom/right; label padding = ignore id) to a
size shared by the whole split so every batch has the same shape. The split is
also padded with all-ignore examples so that every process yields the same
number of batches, as cross-host collectives in the eval step require. With
``eval_scale`` = s the image is the padded label canvas (Hl, Wl) resized to
(Hi, Wi) = (Hl, Wl) * s rounded to multiples of 8, so image and label cover the
same field of view: resize the logits to the label's shape (e.g.
``jax.image.resize(logits, label.shape + (C,), 'bilinear')``) and compare.

Configuration (``config``; ``esnet_jax.data.datasets.default_dataset_config()``
gives ``config.dataset`` with defaults). The pipeline trusts it: the one check
is ``esnet_jax.config.validation.validate_config``, which training and
evaluation run first.

  seed                    Seed of shuffling and augmentation.
  batch_size              GLOBAL training batch; a multiple of
                          process_count * local_device_count.
  eval_batch_size         Optional GLOBAL eval batch (default: batch_size).
  dataset.name            'synthetic' | 'camvid' | 'cityscapes' | 'folder'.
  dataset.root            Dataset folder (unused by synthetic).
  dataset.train_split     Split names, e.g. 'train' and 'val'.
  dataset.eval_split
  dataset.crop_size       Training crop (H, W), multiples of 8.
  dataset.scale_range     Random scale factor range, e.g. (0.5, 2.0).
  dataset.flip            Random horizontal flips.
  dataset.colour_jitter   Brightness/contrast/saturation strength, 0 = off.
  dataset.phases          Progressive resizing: ((until_step, scale, crop_h,
                          crop_w), ...); steps before until_step take crops of
                          that size from images scaled by scale x scale_range.
  dataset.eval_scale      Eval image scale factor (labels stay full size).
  dataset.mean, .std      Per-channel normalisation in pixel units.
  dataset.num_workers     Loader processes; 0 = in this process. Worker
                          processes need parsed absl flags (absl.app.run).
  dataset.read_threads    Optional: threads per loader process (default 2).
  dataset.validate_labels Check every label's values when the source is built.
  dataset.validate_images Optional: decode every file when the source is built.
  dataset.image_size      synthetic: (H, W) of the scenes.
  dataset.num_train       synthetic: examples in the train split ...
  dataset.num_eval        ... and in any other split.
  dataset.train_list      folder: list files, relative to root ...
  dataset.eval_list
  dataset.image_dir       ... or image and label folders ('{split}' allowed).
  dataset.label_dir
  dataset.class_names     folder: class names in train-id order,
  dataset.colours         RGB colour per class (empty = automatic),
  dataset.ignore_label    label value of unlabelled pixels.
  dataset.label_suffix    cityscapes: '_gtFine_labelIds.png' (mapped to
                          train ids) or '_gtFine_labelTrainIds.png'.

Checkpointing the training iterator with Orbax (grain 0.2.18): the iterator's
``get_state()``/``set_state()`` are wrapped by ``grain.checkpoint.
CheckpointSave`` and ``grain.checkpoint.CheckpointRestore`` (handler
``grain.checkpoint.CheckpointHandler``), e.g.::

  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(train_iter)))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(train_iter)))

The restore updates ``train_iter`` in place; each process writes its own
``process_{i}-of-{n}.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from absl import flags
import grain
import ml_collections
import numpy as np

from esnet_jax.data import datasets
from esnet_jax.data import transforms
from esnet_jax.model.esnet import SIZE_MULTIPLE

Batch = dict[str, np.ndarray]
Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Phase:
  """Training steps before ``until_step``: images scaled by ``scale``, crops of ``crop_size``."""

  until_step: int
  scale: float
  crop_size: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class TagStep(grain.transforms.MapWithIndex):
  """Adds the training step an example belongs to (its index // per-process batch).

  The index is the example's position in this process's endless stream, which the
  iterator's checkpointed state restores, so a resumed run sees the same phases.
  """

  batch_size: int

  def map_with_index(self, index: int, element: Example) -> Example:
    return {**element, 'step': index // self.batch_size}


@dataclasses.dataclass(frozen=True)
class TrainAugment(grain.transforms.RandomMap):
  """Random scale, crop (padding small images), flip and colour jitter.

  With ``phases``, an example of step s (tagged by ``TagStep``) takes the scale and
  crop of the first phase with s < until_step; after the last, ``crop_size``.
  """

  crop_size: tuple[int, int]
  scale_range: tuple[float, float]
  flip: bool
  colour_jitter: float
  ignore_label: int
  image_pad_value: tuple[int, int, int]
  phases: tuple[Phase, ...] = ()

  def _phase(self, step: int | None) -> tuple[tuple[float, float], tuple[int, int]]:
    for phase in self.phases:
      if step is not None and step < phase.until_step:
        return (
            self.scale_range[0] * phase.scale,
            self.scale_range[1] * phase.scale,
        ), phase.crop_size
    return self.scale_range, self.crop_size

  def random_map(self, element: Example, rng: np.random.Generator) -> Example:
    scale_range, crop_size = self._phase(element.get('step'))
    image, label = transforms.random_scale(element['image'], element['label'], rng, scale_range)
    image, label = transforms.random_crop(
        image,
        label,
        rng,
        crop_size,
        ignore_label=self.ignore_label,
        image_pad_value=self.image_pad_value,
    )
    if self.flip:
      image, label = transforms.random_flip(image, label, rng)
    image = transforms.colour_jitter(image, rng, self.colour_jitter)
    return {'image': image, 'label': label}


@dataclasses.dataclass(frozen=True)
class EvalResize(grain.transforms.Map):
  """Pads an example to the split's canvas and resizes the image by scale."""

  label_size: tuple[int, int]
  image_size: tuple[int, int]
  ignore_label: int
  image_pad_value: tuple[int, int, int]

  def map(self, element: Example) -> Example:
    image, label = transforms.pad_to_size(
        element['image'],
        element['label'],
        self.label_size,
        ignore_label=self.ignore_label,
        image_pad_value=self.image_pad_value,
    )
    return {
        'image': transforms.resize_image(image, self.image_size),
        'label': label,
    }


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
  """uint8 image -> normalised float32; label -> int32."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  def map(self, element: Example) -> Example:
    return {
        'image': transforms.normalize(element['image'], self.mean, self.std),
        'label': element['label'].astype(np.int32),
    }


@dataclasses.dataclass(frozen=True)
class SplitForDevices(grain.transforms.Map):
  """Reshapes every array of a batch from [B, ...] to [D, B / D, ...]."""

  num_devices: int

  def map(self, element: Batch) -> Batch:
    return {
        key: value.reshape((self.num_devices, -1) + value.shape[1:])
        for key, value in element.items()
    }


@dataclasses.dataclass(frozen=True)
class _IgnoredExamples:
  """Examples with no labelled pixel, to pad an eval split.

  They are a single pixel; ``EvalResize`` pads them to the split's canvas.
  """

  count: int
  ignore_label: int
  image_value: tuple[int, int, int]

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: int) -> Example:
    return {
        'image': np.full((1, 1, 3), self.image_value, np.uint8),
        'label': np.full((1, 1), self.ignore_label, np.uint8),
    }


@dataclasses.dataclass(frozen=True)
class EvalData:
  """The eval batches of this process and the size of the split.

  Iterating yields ``num_batches`` batches (the same on every process) of
  ``{'image': float32 [D, B/D, Hi, Wi, 3], 'label': int32 [D, B/D, Hl, Wl]}``;
  iterate again for another pass.

  Attributes:
    dataset: The grain dataset of this process's batches.
    num_examples: Real examples in the split over all processes (the rest are
      all-ignore padding).
    num_batches: Batches per process.
  """

  dataset: grain.IterDataset
  num_examples: int
  num_batches: int

  def __iter__(self) -> Iterator[Batch]:
    return iter(self.dataset)

  def __len__(self) -> int:
    return self.num_batches


def dataset_class_table(
    config: ml_collections.ConfigDict,
) -> datasets.ClassTable:
  """Class names, colours and ignore id of the configured dataset."""
  return datasets.get_class_table(config.dataset)


def create_train_iterator(
    config: ml_collections.ConfigDict,
    *,
    process_index: int,
    process_count: int,
    local_device_count: int,
) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of augmented train batches.

  Args:
    config: Experiment configuration (see the module docstring).
    process_index: This process's index (``jax.process_index()``).
    process_count: Number of processes (``jax.process_count()``).
    local_device_count: Devices of this process
      (``jax.local_device_count()``).

  Returns:
    A grain iterator with ``get_state``/``set_state`` yielding
    ``{'image': float32 [D, B/D, H, W, 3], 'label': int32 [D, B/D, H, W]}``.
  """
  dataset_cfg = config.dataset
  batch_size = config.batch_size // process_count
  crop_size = tuple(int(side) for side in dataset_cfg.crop_size)
  source = datasets.build_source(dataset_cfg, dataset_cfg.train_split)
  _check_enough_examples(source, dataset_cfg.train_split, process_count)
  shuffle_seed, augment_seed = np.random.SeedSequence([config.seed, process_index]).generate_state(
      2
  )
  augment = TrainAugment(
      crop_size=crop_size,
      scale_range=tuple(dataset_cfg.scale_range),
      flip=bool(dataset_cfg.flip),
      colour_jitter=float(dataset_cfg.colour_jitter),
      ignore_label=source.class_table.ignore_label,
      image_pad_value=_pixel(dataset_cfg.mean),
      phases=tuple(
          Phase(int(until), float(scale), (int(h), int(w)))
          for until, scale, h, w in dataset_cfg.get('phases', ())
      ),
  )
  ds = (
      grain.MapDataset.source(source)[process_index::process_count]
      .shuffle(seed=int(shuffle_seed))
      .repeat()
  )
  if augment.phases:
    ds = ds.map_with_index(TagStep(batch_size))
  ds = (
      ds.random_map(augment, seed=int(augment_seed))
      .map(_normalize(dataset_cfg))
      .batch(batch_size, drop_remainder=True)
      .map(SplitForDevices(local_device_count))
  )
  return iter(_to_iter_dataset(ds, dataset_cfg))


def create_eval_iterator(
    config: ml_collections.ConfigDict,
    *,
    process_index: int,
    process_count: int,
    local_device_count: int,
) -> EvalData:
  """Returns one pass over the eval split at full label resolution.

  Args:
    config: Experiment configuration (see the module docstring).
    process_index: This process's index (``jax.process_index()``).
    process_count: Number of processes (``jax.process_count()``).
    local_device_count: Devices of this process.

  Returns:
    ``EvalData``: iterable of this process's batches, with the number of real
    examples and of batches per process.
  """
  dataset_cfg = config.dataset
  batch_size = config.get('eval_batch_size', config.batch_size) // process_count
  eval_scale = float(dataset_cfg.eval_scale)
  source = datasets.build_source(dataset_cfg, dataset_cfg.eval_split)
  ignore_label = source.class_table.ignore_label
  pad_value = _pixel(dataset_cfg.mean)
  num_examples = len(source)
  padded_count = transforms.round_up(num_examples, process_count * batch_size)
  padding = _IgnoredExamples(padded_count - num_examples, ignore_label, pad_value)
  label_size = tuple(transforms.round_up(side, SIZE_MULTIPLE) for side in source.max_size)
  # The nearest multiple of 8 (at least 8) to each scaled side.
  image_size = tuple(
      max(1, round(side * eval_scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE for side in label_size
  )
  ds = grain.MapDataset.source(source)
  if len(padding):
    ds = grain.MapDataset.concatenate([ds, grain.MapDataset.source(padding)])
  ds = (
      ds[process_index::process_count]
      .map(EvalResize(label_size, image_size, ignore_label, pad_value))
      .map(_normalize(dataset_cfg))
      .batch(batch_size, drop_remainder=True)
      .map(SplitForDevices(local_device_count))
  )
  return EvalData(
      dataset=_to_iter_dataset(ds, dataset_cfg),
      num_examples=num_examples,
      num_batches=padded_count // (process_count * batch_size),
  )


def _to_iter_dataset(
    ds: grain.MapDataset, dataset_cfg: ml_collections.ConfigDict
) -> grain.IterDataset:
  """Reads with threads, and in worker processes if ``num_workers`` > 0."""
  threads = dataset_cfg.get('read_threads', datasets.DEFAULT_READ_THREADS)
  iter_ds = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
  )
  if dataset_cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      raise ValueError(
          'config.dataset.num_workers > 0 needs parsed absl flags (grain '
          'reads its own flags when it starts worker processes): run under '
          'absl.app.run, or call absl.flags.FLAGS.mark_as_parsed() first.'
      )
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=dataset_cfg.num_workers))
  return iter_ds


def _normalize(dataset_cfg: ml_collections.ConfigDict) -> Normalize:
  return Normalize(mean=tuple(dataset_cfg.mean), std=tuple(dataset_cfg.std))


def _check_enough_examples(
    source: datasets.SegmentationSource, split: str, process_count: int
) -> None:
  if len(source) < process_count:
    raise datasets.DatasetError(
        f'Split {split!r} has {len(source)} examples, fewer than the '
        f'{process_count} processes reading it.'
    )


def _pixel(mean: Sequence[float]) -> tuple[int, int, int]:
  """The uint8 pixel closest to ``mean``: padding that normalises to ~0."""
  return tuple(int(np.clip(round(value), 0, 255)) for value in mean)
