"""Capture named layers with forward hooks and cache them as memmapped .npy files.

Layout of an activation cache directory:

    metadata.json                     what is here: sample indices, models (checkpoint, sha256,
                                      epoch, layers), arrays (file, shape, dtype)
    indices.npy  labels.npy           the test-split samples (drawn once from the seed)
    <model>__<layer>.npy              (N, ...) float32/float16, e.g. teacher__stage3.npy
    <model>__attn__<module>.npy       (N, heads, T, T) attention weights (models with MHA);
                                      sequences: (N, heads, Q, T_max), Q = T_max for encoder
                                      self-attention, 1 for the class query's cross-attention
    lengths.npy                       sequences only: valid frames of each sample (N,); every
                                      measure reads only the valid part (padded keys hold 0)
    test_labels.npy                   labels of the whole test split
    logits__<role>.npy                (test size, classes) float32 logits of the final teacher
                                      and student on the whole test split (fidelity, ECE)

<model> is `teacher`, `student`, or a milestone such as `student@epoch_0010`. Arrays are opened
with numpy's memmap, so analysis reads them without loading or recomputing anything; the
directory is written beside its destination and renamed into place when complete.

metadata.json records the sha256 of every array file and a checksum of its own content; the
reader verifies both, and that every value is finite, before an array is used: a flipped,
truncated or NaN-filled file is refused with one line naming it and the command that rebuilds it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from kdlab.checksum import json_sha256, sha256_file
from kdlab.data.loader import BatchLoader, Split
from kdlab.errors import DataError
from kdlab.extract.attention import capture_attention, mha_modules
from kdlab.fsutil import atomic_directory
from kdlab.models import FeatureModel
from kdlab.models.base import logits_of
from kdlab.progress import bar

FORMAT = "kdlab.activations/2"


@contextlib.contextmanager
def capture_layers(model: FeatureModel, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward pass stores {layer: activation} for the named layers."""
    points = model.hook_points()
    unknown = [name for name in layers if name not in points]
    if unknown:
        raise DataError(
            f"extract.layers: {unknown[0]!r} is not a layer; valid: {', '.join(points)}"
        )
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        module, select = points[name]
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name, select=select: captured.__setitem__(name, select(out))
        ))  # fmt: skip
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def sample_indices(n_total: int, n_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of the extraction sample, drawn once from the seed."""
    n = min(n_samples, n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


class _ArrayWriter:
    """Creates each memmap on its first batch (when the shape is known) and fills rows."""

    def __init__(self, out_dir: Path, n: int, dtype: str) -> None:
        self.out_dir, self.n, self.dtype = out_dir, n, dtype
        self.arrays: dict[str, np.memmap] = {}
        self.info: dict[str, dict] = {}

    def write(self, key: str, start: int, batch: torch.Tensor) -> None:
        values = batch.detach().float().cpu().numpy()
        if key not in self.arrays:
            filename = f"{key.replace('/', '__')}.npy"
            shape = (self.n, *values.shape[1:])
            self.arrays[key] = np.lib.format.open_memmap(
                self.out_dir / filename, mode="w+", dtype=self.dtype, shape=shape
            )
            self.info[key] = {"file": filename, "shape": list(shape), "dtype": self.dtype}
        self.arrays[key][start : start + len(values)] = values

    def close(self) -> dict[str, dict]:
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        for info in self.info.values():
            info["sha256"] = sha256_file(self.out_dir / info["file"])
        return self.info


@torch.inference_mode()
def extract_model(model: FeatureModel, loader: BatchLoader, layers: list[str], name: str,
                  writer: _ArrayWriter, attention: bool) -> None:  # fmt: skip
    """Run the sample through `model` once; write every layer (and attention) to `writer`."""
    model.eval()
    start = 0
    with contextlib.ExitStack() as stack:
        acts = stack.enter_context(capture_layers(model, layers))
        attn = stack.enter_context(capture_attention(model)) if attention else {}
        batches = bar(loader, f"extract {name}", total=len(loader), unit="img",
                      scale=loader.batch_size)  # fmt: skip
        for images, _labels, _indices, mask in batches:
            logits_of(model, images, mask)
            for layer in layers:
                writer.write(f"{name}/{layer}", start, acts[layer])
            for module, weights in attn.items():
                writer.write(f"{name}/attn/{module}", start, weights)
            start += len(images)


@torch.inference_mode()
def test_logits(model: FeatureModel, loader: BatchLoader, role: str, writer: _ArrayWriter) -> None:
    """`model`'s float32 logits on every image of `loader`, as `logits/<role>`."""
    model.eval()
    start = 0
    for images, _labels, _indices, mask in loader:
        logits = logits_of(model, images, mask)
        writer.write(f"logits/{role}", start, logits)
        start += len(images)


def extract_all(
    models: dict[str, tuple[FeatureModel, dict]],
    split: Split,
    mean: list[float],
    std: list[float],
    indices: np.ndarray,
    layers: list[str] | None,
    out_dir: Path,
    dtype: str = "float32",
    batch_size: int = 256,
    attention: bool = True,
    classes: list[str] | None = None,
) -> dict:
    """Extract every model's layers on split[indices] into `out_dir` (atomically); metadata."""
    idx = torch.as_tensor(indices, device=split.images.device)
    sample = split.take(idx)
    loader = BatchLoader(sample, batch_size, mean, std, train=False)
    with atomic_directory(out_dir) as tmp_dir:
        writer = _ArrayWriter(tmp_dir, len(indices), dtype)
        model_info = {}
        for name, (model, info) in models.items():
            chosen = list(layers) if layers else list(model.hook_points())
            has_attention = attention and bool(mha_modules(model))
            extract_model(model, loader, chosen, name, writer, has_attention)
            model_info[name] = {**info, "layers": chosen, "attention": has_attention}
        arrays = writer.close()
        whole = _ArrayWriter(tmp_dir, len(split), "float32")
        full_loader = BatchLoader(split, batch_size, mean, std, train=False)
        for role in ("teacher", "student"):
            if role in models:  # a study of one model has no student
                test_logits(models[role][0], full_loader, role, whole)
        arrays.update(whole.close())
        np.save(tmp_dir / "indices.npy", np.asarray(indices, dtype=np.int64))
        np.save(tmp_dir / "labels.npy", sample.labels.cpu().numpy())
        np.save(tmp_dir / "test_labels.npy", split.labels.cpu().numpy())
        files = ["indices.npy", "labels.npy", "test_labels.npy"]
        if sample.lengths is not None:
            np.save(tmp_dir / "lengths.npy", sample.lengths.cpu().numpy())
            files.append("lengths.npy")
        metadata = {"format": FORMAT, "split": "test", "n": len(indices), "dtype": dtype,
                    "test_size": len(split), "indices": [int(i) for i in indices],
                    "models": model_info, "arrays": arrays,
                    "files_sha256": {n: sha256_file(tmp_dir / n) for n in files}}  # fmt: skip
        if sample.lengths is not None:  # an image cache's metadata stays as it always was
            metadata["kind"] = "sequence"
            metadata["classes"] = list(classes or [])  # case studies are named by class
        metadata[META_CHECKSUM] = metadata_checksum(metadata)
        (tmp_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def all_finite(array: np.ndarray, rows: int = 1024) -> bool:
    """No NaN or inf, checked a block of rows at a time (a memmap is never loaded whole)."""
    return all(np.isfinite(array[i : i + rows]).all() for i in range(0, len(array), rows))


META_CHECKSUM = "metadata_sha256"
REBUILD = "run `dvc repro -f extract` (or `dvc checkout data/activations`) to rebuild it"


def metadata_checksum(metadata: dict) -> str:
    """sha256 of metadata.json's content without its own checksum (canonical JSON)."""
    return json_sha256({k: v for k, v in metadata.items() if k != META_CHECKSUM})


def read_metadata(meta_path: Path) -> dict:
    """metadata.json, parsed and verified against its own checksum."""
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{meta_path} is corrupt (not JSON); {REBUILD}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} is not a kdlab activation cache; {REBUILD}")
    if meta.get(META_CHECKSUM) != metadata_checksum(meta):
        raise DataError(f"{meta_path} does not match its checksum (corrupt); {REBUILD}")
    return meta


class ActivationCache:
    """Read side: memmapped arrays by (model, layer), with a staleness check."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        meta_path = self.dir / "metadata.json"
        if not meta_path.exists():
            raise DataError(f"{self.dir} holds no activations: run `dvc repro extract`")
        self.meta = read_metadata(meta_path)
        self.labels = self._load("labels.npy", self.meta["files_sha256"]["labels.npy"])
        self.indices = self._load("indices.npy", self.meta["files_sha256"]["indices.npy"])
        self.kind = self.meta.get("kind", "image")
        self.lengths = None  # (N,) valid frames of each sequence
        if self.kind == "sequence":
            self.lengths = self._load("lengths.npy", self.meta["files_sha256"]["lengths.npy"])
        self._verified: dict[str, np.ndarray] = {}

    def _load(self, filename: str, sha256: str, mmap_mode: str | None = None) -> np.ndarray:
        """A verified array: its file's sha256 as recorded, readable, and finite."""
        path = self.dir / filename
        if not path.exists():
            raise DataError(f"{path} is missing; {REBUILD}")
        if sha256_file(path) != sha256:
            raise DataError(f"{path} does not match its sha256 in metadata.json (corrupt); "
                            f"{REBUILD}")  # fmt: skip
        try:
            array = np.load(path, mmap_mode=mmap_mode)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is unreadable ({exc}); {REBUILD}") from None
        if array.dtype.kind == "f" and not all_finite(array):
            raise DataError(f"{path} holds NaN or infinite values; {REBUILD}")
        return array

    def check_fresh(self, checkpoints: dict[str, Path]) -> None:
        """Each named model must have been extracted from the checkpoint file given now."""
        for name, path in checkpoints.items():
            recorded = self.meta["models"].get(name, {}).get("sha256")
            if recorded != sha256_file(Path(path)):
                raise DataError(
                    f"{self.dir} is stale: its {name} activations come from another checkpoint "
                    f"than {path}; run `dvc repro extract`"
                )

    def models(self) -> list[str]:
        return list(self.meta["models"])

    def layers(self, model: str) -> list[str]:
        """`model`'s extracted layers; none for a model not in the cache (no student)."""
        return list(self.meta["models"].get(model, {}).get("layers", []))

    def attention_modules(self, model: str) -> list[str]:
        prefix = f"{model}/attn/"
        return [key[len(prefix) :] for key in self.meta["arrays"] if key.startswith(prefix)]

    def test_labels(self) -> np.ndarray:
        """Labels of the whole test split (verified)."""
        return self._load("test_labels.npy", self.meta["files_sha256"]["test_labels.npy"])

    def test_logits(self, role: str) -> np.ndarray:
        """(test size, classes) logits of the final `role` on the whole test split."""
        return self.get("logits", role)

    def get(self, model: str, layer: str) -> np.ndarray:
        """(N, ...) memmapped, read-only; verified (checksum, finite values) on first use."""
        key = f"{model}/{layer}"
        if key not in self._verified:
            info = self.meta["arrays"][key]
            self._verified[key] = self._load(info["file"], info["sha256"], mmap_mode="r")
        return self._verified[key]
