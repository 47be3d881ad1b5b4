"""Multivariate and univariate time series of the UEA/UCR archive (timeseriesclassification.com),
read from their `.ts` files (kdlab.data.ts_format): variable-length sequence datasets.

The files are the archive's as the aeon toolkit ships them (aeon 1.6.0,
`aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts`; the MD5s below are of those files). Where
there is no internet, point `data.mirror` at a directory (or URL) holding the files under their
own names, e.g. unzipped from the aeon wheel (`pip download aeon==1.6.0 --no-deps`, see
docs/sequences.md); kdlab does not depend on aeon. Labels stay exactly as the files write them;
class i is the i-th label of the file's `@classLabel` line.
"""

from __future__ import annotations

import numpy as np

from kdlab.data.datasets import BuildContext, DatasetSpec, SequenceArrays, register_dataset
from kdlab.data.download import RemoteFile, fetch
from kdlab.data.ts_format import read_ts
from kdlab.errors import DataError

AEON_DATA_URL = "https://raw.githubusercontent.com/aeon-toolkit/aeon/v1.6.0/aeon/datasets/data/"


def uea_files(problem: str, train_md5: str, test_md5: str) -> tuple[RemoteFile, RemoteFile]:
    base = f"{AEON_DATA_URL}{problem}/{problem}"
    return RemoteFile(f"{base}_TRAIN.ts", train_md5), RemoteFile(f"{base}_TEST.ts", test_md5)


def make_builder(problem: str, files: tuple[RemoteFile, RemoteFile], classes: tuple[str, ...]):
    def build(ctx: BuildContext) -> SequenceArrays:
        splits = []
        for remote in files:
            data = read_ts(fetch(remote, ctx.download_dir, ctx.mirror))
            if data.class_labels != classes:
                raise DataError(f"{remote.filename}: classes {' '.join(data.class_labels)}, "
                                f"expected {' '.join(classes)}")  # fmt: skip
            labels = np.array([classes.index(label) for label in data.labels], dtype=np.int64)
            splits.append((data.series, labels))
        (train, train_labels), (test, test_labels) = splits
        return SequenceArrays(train, train_labels, test, test_labels, classes)

    build.__doc__ = f"{problem} from the UEA/UCR archive's .ts files (official split)."
    return build


def register_uea(name: str, problem: str, md5s: tuple[str, str], classes: tuple[str, ...],
                 shape: tuple[int, int], train_size: int) -> None:  # fmt: skip
    files = uea_files(problem, *md5s)
    register_dataset(
        DatasetSpec(
            name,
            image_shape=(),
            num_classes=len(classes),
            train_size=train_size,
            build=make_builder(problem, files, classes),
            kind="sequence",
            sequence_shape=shape,
            classes=classes,
            files=files,
            source=f"UEA/UCR archive, {problem} (timeseriesclassification.com; files as aeon 1.6.0 "
            "ships them)",
        )
    )


# Kudo et al. 1999: 9 speakers' /ae/ as 12 LPC cepstrum coefficients, 7–29 frames.
register_uea("japanese_vowels", "JapaneseVowels",
             ("9165e3eec783ac6342d658685c864d19", "14d15214e3ab6ac39ab2d48901d3e2a3"),
             tuple(str(i) for i in range(1, 10)), (29, 12), 270)  # fmt: skip
# Guna et al. 2014: Wii remote z-acceleration of 10 gestures, 29–361 samples.
register_uea("pickup_gesture_wiimote_z", "PickupGestureWiimoteZ",
             ("d40495981fc37960e779fd20bc6f2d45", "0c0505c51a1f481249f1f38c718ce534"),
             tuple(str(i) for i in range(1, 11)), (361, 1), 50)  # fmt: skip
# Clements et al.: smartwatch accelerometer + gyroscope of 4 activities, 100 samples each.
register_uea("basic_motions", "BasicMotions",
             ("ebf723e9e78fb3396ab2420cddfb0856", "72a1a7bec5ac32a305fe0a6d0a2cefdc"),
             ("Standing", "Running", "Walking", "Badminton"), (100, 6), 40)  # fmt: skip
