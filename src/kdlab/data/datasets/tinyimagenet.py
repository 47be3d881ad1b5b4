"""TinyImageNet-200 (CS231n) from the official zip; its val split is the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlab.data.archives import safe_extract_zip
from kdlab.data.datasets import Arrays, BuildContext, DatasetSpec, register_dataset
from kdlab.data.download import RemoteFile, fetch

TINYIMAGENET = RemoteFile("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                          "90528d7ca1a48142e341f4ef8d21d0de")  # fmt: skip


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # a few are greyscale


def build_tinyimagenet(ctx: BuildContext) -> Arrays:
    """TinyImageNet-200: 100,000 train / 10,000 official-val (used as test) 64×64 RGB images."""
    from tqdm import tqdm

    archive = fetch(TINYIMAGENET, ctx.download_dir, ctx.mirror)
    safe_extract_zip(archive, ctx.scratch_dir)
    root = ctx.scratch_dir / "tiny-imagenet-200"
    wnids = sorted((root / "wnids.txt").read_text().split())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    words = {}
    if (root / "words.txt").exists():
        for line in (root / "words.txt").read_text().splitlines():
            wnid, _, name = line.partition("\t")
            words[wnid] = name.split(",")[0].strip()
    train = [(path, index[wnid]) for wnid in wnids
             for path in sorted((root / "train" / wnid / "images").glob("*.JPEG"))]  # fmt: skip
    val = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        filename, wnid, *_ = line.split("\t")
        val.append((root / "val" / "images" / filename, index[wnid]))
    val.sort()

    def load(items, desc):
        images = np.stack([_read_rgb(p) for p, _ in tqdm(items, desc=desc, disable=None)])
        return images, np.asarray([label for _, label in items], dtype=np.int64)

    train_x, train_y = load(train, "decode train")
    test_x, test_y = load(val, "decode val")
    return Arrays(train_x, train_y, test_x, test_y, tuple(words.get(w, w) for w in wnids))


register_dataset(
    DatasetSpec(
        "tinyimagenet",
        image_shape=(64, 64, 3),
        num_classes=200,
        train_size=100_000,
        build=build_tinyimagenet,
        crop_padding=8,
        horizontal_flip=True,
        files=(TINYIMAGENET,),
        source="http://cs231n.stanford.edu/ (CS231n)",
    )
)
