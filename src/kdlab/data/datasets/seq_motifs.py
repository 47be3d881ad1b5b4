"""`seq_motifs`: an embedded synthetic sequence dataset (no download) whose class is *where in
time* a motif occurs, in series of varying length: attention has something real to find.

Each sample has 3 channels of noise and a slow drift, 16 to 48 frames long. A motif (a bump up
in channel 0 and down in channel 1, about 3 frames wide) is centred in frames 2–10, 14–22,
26–34 or 38–46: that window is the class. A sample is at least 2 frames longer than its motif's
centre and otherwise of random length, so the length alone does not give the class away (a
long sample can be of any class). Built from SPLIT_SEED in well under a second.
"""

from __future__ import annotations

import numpy as np

from kdlab.data.datasets import (
    SPLIT_SEED,
    BuildContext,
    DatasetSpec,
    SequenceArrays,
    register_dataset,
)

CLASSES = ("frames 2-10", "frames 14-22", "frames 26-34", "frames 38-46")
WINDOW = 12
"""Frames per class window; the motif's centre keeps 2 frames from each window's edges."""
MIN_LENGTH, MAX_LENGTH, CHANNELS = 16, 48, 3
TRAIN_SIZE, TEST_SIZE = 600, 300


def make_sample(rng: np.random.Generator, label: int) -> np.ndarray:
    """One (T, 3) float32 series with its motif in window `label`."""
    centre = rng.uniform(label * WINDOW + 2, (label + 1) * WINDOW - 2)
    length = int(rng.integers(max(MIN_LENGTH, int(np.ceil(centre)) + 2), MAX_LENGTH + 1))
    t = np.arange(length, dtype=np.float64)
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(12, 40)
    drift = 0.5 * np.sin(2 * np.pi * t / period + phase)
    series = rng.normal(0.0, 0.3, size=(length, CHANNELS)) + drift[:, None]
    bump = 2.0 * np.exp(-0.5 * ((t - centre) / 1.0) ** 2)
    series[:, 0] += bump
    series[:, 1] -= bump
    return series.astype(np.float32)


def make_split(rng: np.random.Generator, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    labels = np.arange(size, dtype=np.int64) % len(CLASSES)  # balanced
    rng.shuffle(labels)
    return [make_sample(rng, int(label)) for label in labels], labels


def build_seq_motifs(ctx: BuildContext) -> SequenceArrays:
    rng = np.random.default_rng(SPLIT_SEED)
    train, train_labels = make_split(rng, TRAIN_SIZE)
    test, test_labels = make_split(rng, TEST_SIZE)
    return SequenceArrays(train, train_labels, test, test_labels, CLASSES)


register_dataset(
    DatasetSpec(
        "seq_motifs",
        image_shape=(),
        num_classes=len(CLASSES),
        train_size=TRAIN_SIZE,
        build=build_seq_motifs,
        kind="sequence",
        sequence_shape=(MAX_LENGTH, CHANNELS),
        classes=CLASSES,
        source="built by kdlab (kdlab/data/datasets/seq_motifs.py): where the motif is = the class",
    )
)
