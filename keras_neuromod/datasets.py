"""The core paper's data sets, by the names `FitnessTask` stores.

`load` (``"digits"``, ``"wine"``, ``"cifar10"``, ``"cifar100"``) gives the
image data sets of the core paper's experiments and a tabular one: the data
that `keras_neuromod.evolution.FitnessTask` evolves on and the
`keras-neuromod compare` command trains on, split into train and test only.
The suite of training tasks that agents are evolved over and judged on is
another registry, `keras_neuromod.tasks.get` (train, validation and test
splits, a model and a budget per task); its digits and wine tasks read their
data from here.

Every loader returns a `Dataset`: ``(x_train, y_train), (x_test, y_test),
num_classes``, with images as float32 in [0, 1] shaped (n, height, width,
channels) and labels as int32 class indices.

* `digits`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes). It needs
  no network, so it is the default of the examples and the data of the tests.
* `wine`: scikit-learn's bundled wine recognition data (178 samples, 13
  features, 3 classes), a tabular task for the MLP that no agent evolves on.
* `cifar10`, `cifar100`: the paper's tasks, through tensorflow-datasets. They
  download on a machine with a network; where the data are neither prepared nor
  reachable, the error says at once what to do instead of retrying for minutes.

`stratified_split` is the class-stratified split they (and the bundled tasks)
use.
"""

import os
import socket
from typing import NamedTuple

import numpy as np

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "NAMES",
    "digits",
    "wine",
    "cifar10",
    "cifar100",
    "load",
    "stratified_split",
]

NAMES = ("digits", "wine", "cifar10", "cifar100")

# Where tensorflow-datasets fetches CIFAR from; only used to fail fast offline.
_CIFAR_HOST = ("www.cs.toronto.edu", 443)


class DatasetUnavailableError(RuntimeError):
    """A data set is neither prepared locally nor downloadable from here."""


class Dataset(NamedTuple):
    """Train and test arrays and the class count.

    Unpacks as ``(x_train, y_train), (x_test, y_test), num_classes = data``.
    """

    train: tuple
    test: tuple
    num_classes: int

    @property
    def input_shape(self):
        """Shape of one example."""
        return tuple(self.train[0].shape[1:])


def digits(test_fraction=0.2, seed=0):
    """scikit-learn's 8x8 handwritten digits, split into train and test.

    The split is stratified by class and fixed by `seed`.

    Args:
        test_fraction: share of the 1,797 images held out for testing.
        seed: seed of the split.

    Returns:
        A `Dataset` with images shaped (n, 8, 8, 1) in [0, 1] and 10 classes.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}.")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "The digits data set comes with scikit-learn, a dependency of keras_neuromod "
            "that is missing here: `pip install scikit-learn`."
        ) from None
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int32")
    train_order, test_order = stratified_split(y, test_fraction, seed)
    return Dataset((x[train_order], y[train_order]), (x[test_order], y[test_order]), 10)


def stratified_split(y, test_fraction, seed):
    """Split sample indices into train and test, the same share of every class in test.

    Of each class, `round(count * test_fraction)` members drawn at random go to
    the test part. `digits`, `wine` and the bundled tasks of
    `keras_neuromod.tasks` split their data with it.

    Args:
        y: int class labels, shape (n,).
        test_fraction: share of each class held out for testing.
        seed: seed of the draw; the same seed gives the same split.

    Returns:
        `(train_index, test_index)`: int arrays of sample indices, the train
        part shuffled and the test part sorted.
    """
    rng = np.random.default_rng(seed)
    test_index = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        test_index.extend(members[: int(round(len(members) * test_fraction))])
    test_mask = np.zeros(len(y), bool)
    test_mask[test_index] = True
    return rng.permutation(np.flatnonzero(~test_mask)), np.sort(np.flatnonzero(test_mask))


def wine(test_fraction=0.3, seed=0):
    """scikit-learn's wine recognition data, standardised with the train split's statistics.

    Returns:
        A `Dataset` with 13 float32 features per sample and 3 classes.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}.")
    try:
        from sklearn.datasets import load_wine
    except ImportError:
        raise ImportError(
            "The wine data set comes with scikit-learn, a dependency of keras_neuromod "
            "that is missing here: `pip install scikit-learn`."
        ) from None
    bunch = load_wine()
    x, y = bunch.data.astype("float64"), bunch.target.astype("int32")
    train, test = stratified_split(y, test_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0)
    x = ((x - mean) / np.where(std > 0, std, 1.0)).astype("float32")
    return Dataset((x[train], y[train]), (x[test], y[test]), 3)


def _network_reachable(address=_CIFAR_HOST, timeout=3.0):
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable_message(name, data_dir, reason):
    where = data_dir or "~/tensorflow_datasets (the default data_dir)"
    return (
        f"The {name} data set is not available: {reason}\n"
        f"To use it, prepare it once on a machine with a network:\n"
        f'    python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir={data_dir!r}).download_and_prepare()\"\n"
        f"and copy the prepared folder to {where}, then pass data_dir=... here.\n"
        "Or use the bundled `digits` data set, which needs no network."
    )


def _tfds_image_classification(name, data_dir=None, download=True):
    """Load the tensorflow-datasets image classification data set `name`."""
    tfds = _import_tfds(name)
    builder = tfds.builder(name, data_dir=data_dir)
    _ensure_prepared(builder, name, data_dir, download)
    # batch_size=-1 aborts the process on some TensorFlow versions (a C++
    # length_error in the whole-split read): read in large batches instead.
    (x_train, y_train), (x_test, y_test) = [
        _as_arrays(tfds, builder.as_dataset(split=split, as_supervised=True))
        for split in ("train", "test")
    ]
    num_classes = builder.info.features["label"].num_classes

    def images(x):
        return (np.asarray(x, dtype="float32") / 255.0).reshape(x.shape)

    return Dataset(
        (images(x_train), np.asarray(y_train, "int32")),
        (images(x_test), np.asarray(y_test, "int32")),
        int(num_classes),
    )


def _import_tfds(name):
    """Import tensorflow-datasets, or say how to install it for data set `name`."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            f"The {name} data set is loaded through tensorflow-datasets: "
            "`pip install keras_neuromod[datasets]`. The `digits` data set needs "
            "nothing more."
        ) from None
    return tfds


def _ensure_prepared(builder, name, data_dir, download):
    """Download and prepare `builder`'s data unless prepared; fail fast where it cannot."""
    if _is_prepared(builder):
        return
    if not download:
        raise DatasetUnavailableError(
            _unavailable_message(name, data_dir, f"nothing is prepared under {builder.data_dir}.")
        )
    if not _network_reachable():
        raise DatasetUnavailableError(
            _unavailable_message(
                name,
                data_dir,
                "it is not prepared locally and its download server cannot "
                "be reached from this machine.",
            )
        )
    builder.download_and_prepare()


def _as_arrays(tfds, dataset):
    images, labels = [], []
    for x, y in tfds.as_numpy(dataset.batch(4096)):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _is_prepared(builder):
    info_file = os.path.join(os.fspath(builder.data_dir), "dataset_info.json")
    try:
        import tensorflow as tf

        return bool(tf.io.gfile.exists(info_file))
    except ImportError:  # pragma: no cover - tensorflow is a dependency
        return os.path.exists(info_file)


def cifar10(data_dir=None, download=True):
    """CIFAR-10 through tensorflow-datasets (50,000 train and 10,000 test images).

    Args:
        data_dir: the tensorflow-datasets folder (default ~/tensorflow_datasets).
        download: download and prepare the data when they are not prepared yet.
            Offline, the error comes at once and says what to do.
    """
    return _tfds_image_classification("cifar10", data_dir, download)


def cifar100(data_dir=None, download=True):
    """CIFAR-100 (fine labels) through tensorflow-datasets. Args as `cifar10`."""
    return _tfds_image_classification("cifar100", data_dir, download)


def load(name, **kwargs):
    """Load a data set by name: ``"digits"``, ``"wine"``, ``"cifar10"`` or ``"cifar100"``."""
    loaders = {"digits": digits, "wine": wine, "cifar10": cifar10, "cifar100": cifar100}
    if name not in loaders:
        raise ValueError(f"Unknown data set {name!r}; choose one of {list(NAMES)}.")
    return loaders[name](**kwargs)
