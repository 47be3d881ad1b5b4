"""`digits`: scikit-learn's bundled copy of the UCI handwritten digits (no download)."""

from __future__ import annotations

import numpy as np

from kdlab.data.datasets import SPLIT_SEED, Arrays, BuildContext, DatasetSpec, register_dataset


def build_digits(ctx: BuildContext) -> Arrays:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images), split 80/20 by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are counts 0..16 of an 4×4 block; scale to the full uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=SPLIT_SEED
    )
    train_idx.sort()
    test_idx.sort()
    return Arrays(
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        test_images=images[test_idx],
        test_labels=labels[test_idx],
        classes=tuple(str(c) for c in bunch.target_names),
    )


register_dataset(
    DatasetSpec(
        "digits",
        image_shape=(8, 8, 1),
        num_classes=10,
        train_size=1437,
        build=build_digits,
        crop_padding=1,
        horizontal_flip=False,
        source="scikit-learn's bundled copy of the UCI handwritten digits",
    )
)
