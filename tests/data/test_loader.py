"""The tensor-resident batch loader: seeded, epoch-dependent augmentation on whole batches."""

from __future__ import annotations

import pytest
import torch

from kdlab.data.loader import Batch, BatchLoader, Split, epoch_generator, load_dataset, random_crop


def make_split(n=40, channels=3, size=6) -> Split:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, channels), generator=gen, dtype=torch.uint8)
    return Split(images.permute(0, 3, 1, 2), torch.arange(n) % 5)


def loader(split, **kw) -> BatchLoader:
    defaults = dict(batch_size=8, mean=[0.5] * 3, std=[0.25] * 3, train=True, seed=0,
                    crop_padding=2, horizontal_flip=True)  # fmt: skip
    return BatchLoader(split, **{**defaults, **kw})


def epoch_batches(ldr: BatchLoader, epoch: int) -> list[Batch]:
    ldr.set_epoch(epoch)
    return list(ldr)


def same(a, b) -> bool:
    return all((x is None and y is None) or torch.equal(x, y) for p, q in zip(a, b, strict=True)
               for x, y in zip(p, q, strict=True))  # fmt: skip


def test_augmentation_is_seeded():
    split = make_split()
    assert same(epoch_batches(loader(split), 3), epoch_batches(loader(split), 3))


def test_augmentation_and_order_differ_across_epochs_and_seeds():
    split = make_split()
    ldr = loader(split)
    e0, e1 = epoch_batches(ldr, 0), epoch_batches(ldr, 1)
    assert not same(e0, e1)
    assert not same(e0, epoch_batches(loader(split, seed=1), 0))


def test_every_epoch_is_a_permutation_without_repeats():
    split = make_split(n=40)
    labels_seen = []
    ldr = loader(split, crop_padding=0, horizontal_flip=False)
    ldr.set_epoch(5)
    order, _, _ = ldr.epoch_plan()
    assert sorted(order.tolist()) == list(range(40))
    for _images, labels, _indices, _mask in ldr:
        labels_seen.append(labels)
    assert len(labels_seen) == 5  # 40 // 8 full batches, none dropped here


def test_last_incomplete_batch_is_dropped_in_training_only():
    split = make_split(n=20)
    assert [len(b.labels) for b in loader(split)] == [8, 8]
    assert [len(b.labels) for b in loader(split, train=False)] == [8, 8, 4]


def reference_augment(image_chw: torch.Tensor, padding: int, top: int, left: int, flip: bool):
    """The plain per-sample way: pad one image, slice its crop, maybe mirror it."""
    padded = torch.nn.functional.pad(image_chw, (padding,) * 4)
    crop = padded[:, top : top + image_chw.shape[1], left : left + image_chw.shape[2]]
    return crop.flip(2) if flip else crop


def test_batch_augmentation_equals_per_sample_reference():
    split = make_split(n=16)
    ldr = loader(split, batch_size=16, crop_padding=2)
    ldr.set_epoch(7)
    order, offsets, flips = ldr.epoch_plan()
    (images, labels, indices, _mask), = list(ldr)  # fmt: skip
    assert torch.equal(indices, order)
    for row, idx in enumerate(order.tolist()):
        expected = (
            reference_augment(
                split.images[idx], 2, int(offsets[idx, 0]), int(offsets[idx, 1]), bool(flips[idx])
            ).float()
            * ldr.scale[0]
            + ldr.shift[0]
        )
        assert torch.allclose(images[row], expected, atol=1e-6)
        assert labels[row] == split.labels[idx]
    assert flips.any() and not flips.all()
    assert (offsets != 2).any()  # some crops actually move


def test_no_flip_when_disabled_and_no_augmentation_in_eval():
    split = make_split(n=16)
    ldr = loader(split, batch_size=16, crop_padding=0, horizontal_flip=False)
    ldr.set_epoch(0)
    order, _, _ = ldr.epoch_plan()
    (images, _, _, _), = list(ldr)  # fmt: skip
    expected = split.images[order].float() * ldr.scale + ldr.shift
    assert torch.allclose(images, expected, atol=1e-6)
    ev = loader(split, train=False, batch_size=16)
    (images, labels, indices, _mask), = list(ev)  # fmt: skip
    assert torch.equal(labels, split.labels) and torch.equal(indices, torch.arange(16))
    assert torch.allclose(images, split.images.float() * ev.scale + ev.shift, atol=1e-6)


def test_zero_padding_crop_is_identity():
    images = make_split(n=4).images
    assert torch.equal(random_crop(images, 0, torch.zeros(4, 2, dtype=torch.long)), images)


def test_epoch_generator_depends_only_on_seed_and_epoch():
    a = torch.rand(3, generator=epoch_generator(1, 2))
    assert torch.equal(a, torch.rand(3, generator=epoch_generator(1, 2)))
    assert not torch.equal(a, torch.rand(3, generator=epoch_generator(1, 3)))
    assert not torch.equal(a, torch.rand(3, generator=epoch_generator(2, 2)))


def test_normalised_digits_have_zero_mean_unit_std(digits_dir):
    data = load_dataset(digits_dir)
    ev = BatchLoader(data.train, 4096, data.meta["mean"], data.meta["std"], train=False)
    (images, _, _, _), = list(ev)  # fmt: skip
    assert images.shape == (1437, 1, 8, 8)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert images.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert images.std().item() == pytest.approx(1.0, abs=1e-3)
