"""SVHN cropped digits (Netzer et al. 2011) from the official MATLAB files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlab.data.datasets import Arrays, BuildContext, DatasetSpec, register_dataset
from kdlab.data.download import RemoteFile, fetch
from kdlab.errors import DataError

SVHN_TRAIN = RemoteFile("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                        "e26dedcc434d2e4c54c9b2d4a06d8373")  # fmt: skip
SVHN_TEST = RemoteFile("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                       "eb5a983be6a315427106f1b164d9cef3")  # fmt: skip


def _load_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise DataError(f"{path.name} is not a readable MATLAB file ({exc})") from None
    images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # the digit 0 is stored as 10
    return images, labels


def build_svhn(ctx: BuildContext) -> Arrays:
    """SVHN cropped digits (Netzer et al. 2011): 73,257 train / 26,032 test 32×32 RGB."""
    train_x, train_y = _load_svhn(fetch(SVHN_TRAIN, ctx.download_dir, ctx.mirror))
    test_x, test_y = _load_svhn(fetch(SVHN_TEST, ctx.download_dir, ctx.mirror))
    return Arrays(train_x, train_y, test_x, test_y, tuple(str(i) for i in range(10)))


register_dataset(
    DatasetSpec(
        "svhn",
        image_shape=(32, 32, 3),
        num_classes=10,
        train_size=73_257,
        build=build_svhn,
        crop_padding=4,
        horizontal_flip=False,  # a mirrored digit is another digit
        files=(SVHN_TRAIN, SVHN_TEST),
        source="http://ufldl.stanford.edu/housenumbers/",
    )
)
