"""Dataset-scale activations as sharded memmaps: written streaming, read verified.

One directory per (split, layer):

    metadata.json        format, layer, d, dtype, rows, samples, tokens per sample, the model
                         (checkpoint sha256, arch, epoch), seed, every shard (its files, rows and
                         sha256s) and a checksum of its own content
    acts_00000.bin ...   (rows, d) raw C-order little-endian float32/float16: a memmap, the layout
                         saev's `acts*.bin` uses (no .npy header); the last shard holds the rest,
                         it is not padded to full size
    index_00000.bin ...  (rows, 2) int64: the sample index (in its split) and the token of each row

A row is one token: a CNN stage's spatial position (its channel vector, tokens h·W + w), a ViT
stage's token (0 = CLS, then the patches), a sequence encoder's valid frame (padding is never
written), or a pooled vector such as `embedding` (one token per sample).

The writer appends each batch to the open shard and hashes it as it goes, so memory stays at one
batch whatever the split's size; the directory is written beside its destination and renamed into
place complete. The reader verifies metadata.json against its checksum, then every shard's size,
sha256 and finiteness in one streaming pass, and refuses a bad one in a line that names it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.checksum import json_sha256
from kdlab.errors import DataError

FORMAT = "kdlab.shards/1"
META_CHECKSUM = "metadata_sha256"
DTYPES = ("float32", "float16")
REBUILD = "run `dvc repro -f shards` (or `dvc checkout data/shards`) to rebuild it"


class _Stream:
    """One shard file being written: appended to and hashed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed by finish)
        self.digest = hashlib.sha256()

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        self.file.write(data)
        self.digest.update(data)

    def finish(self) -> str:
        self.file.close()
        return self.digest.hexdigest()


class ShardWriter:
    """Appends (n, d) rows with their (sample, token) index to shards of `shard_rows` rows."""

    def __init__(self, out_dir: Path, d: int, dtype: str, shard_rows: int) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.out_dir, self.d, self.dtype, self.shard_rows = Path(out_dir), d, dtype, shard_rows
        self.shards: list[dict] = []
        self.rows = 0
        self._acts: _Stream | None = None
        self._index: _Stream | None = None
        self._in_shard = 0

    def add(self, values: np.ndarray, samples: np.ndarray, tokens: np.ndarray) -> None:
        if values.ndim != 2 or values.shape[1] != self.d:
            raise ValueError(f"rows of shape {values.shape}; this writer takes (n, {self.d})")
        if not np.isfinite(values).all():
            raise DataError(f"layer activations hold NaN or infinite values (row {self.rows}+)")
        values = values.astype(f"<{'f4' if self.dtype == 'float32' else 'f2'}", copy=False)
        index = np.stack([samples, tokens], axis=1).astype("<i8", copy=False)
        start = 0
        while start < len(values):
            if self._acts is None:
                self._open()
            take = min(self.shard_rows - self._in_shard, len(values) - start)
            self._acts.write(values[start : start + take])
            self._index.write(index[start : start + take])
            self._in_shard += take
            self.rows += take
            start += take
            if self._in_shard == self.shard_rows:
                self._close_shard()

    def _open(self) -> None:
        number = len(self.shards)
        self._acts = _Stream(self.out_dir / f"acts_{number:05d}.bin")
        self._index = _Stream(self.out_dir / f"index_{number:05d}.bin")
        self._in_shard = 0

    def _close_shard(self) -> None:
        self.shards.append({
            "acts": self._acts.path.name, "index": self._index.path.name,
            "rows": self._in_shard, "acts_sha256": self._acts.finish(),
            "index_sha256": self._index.finish(),
        })  # fmt: skip
        self._acts = self._index = None

    def close(self) -> list[dict]:
        if self._acts is not None:
            self._close_shard()
        return self.shards


def write_metadata(out_dir: Path, **fields) -> dict:
    """metadata.json with its own checksum."""
    meta = {"format": FORMAT, **fields}
    meta[META_CHECKSUM] = json_sha256(meta)
    (Path(out_dir) / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


LAYERS_FORMAT = "kdlab.shard-layers/1"


def write_layer_list(root: Path, layers: list[str], model: dict) -> None:
    """`root/layers.json`: the layers a shards stage wrote (each a ShardSet in `root/<layer>`)."""
    listing = {"format": LAYERS_FORMAT, "layers": layers, "model": model}
    listing[META_CHECKSUM] = json_sha256(listing)
    (Path(root) / "layers.json").write_text(json.dumps(listing, indent=2) + "\n")


def _read_verified_json(path: Path, fmt: str, what: str) -> dict:
    """A JSON file of format `fmt` that matches the checksum it carries of its own content."""
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is corrupt (not JSON); {REBUILD}") from None
    if not isinstance(content, dict) or content.get("format") != fmt:
        raise DataError(f"{path} is not {what} ({fmt}); {REBUILD}")
    if content.get(META_CHECKSUM) != json_sha256({k: v for k, v in content.items()
                                                  if k != META_CHECKSUM}):  # fmt: skip
        raise DataError(f"{path} does not match its checksum (corrupt); {REBUILD}")
    return content


def read_layer_list(root: Path) -> list[str]:
    """The layers in `root` (verified listing); [] for the placeholder of `shards.layers: []`."""
    path = Path(root) / "layers.json"
    if not path.exists():
        raise DataError(f"{path} is missing: {root} is not a shards stage's output; {REBUILD}")
    return list(_read_verified_json(path, LAYERS_FORMAT, "a kdlab shard listing")["layers"])


@dataclass(frozen=True)
class _Shard:
    acts: np.memmap
    index: np.memmap
    start: int  # the first row's global number


class ShardSet:
    """Read side: the rows of one (split, layer) directory, verified on open, memmapped."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.dir = Path(path)
        meta_path = self.dir / "metadata.json"
        if not meta_path.exists():
            raise DataError(f"{self.dir} holds no activation shards (no metadata.json); {REBUILD}")
        meta = _read_verified_json(meta_path, FORMAT, "kdlab activation shards")
        self.meta = meta
        self.d = int(meta["d"])
        self.dtype = np.dtype("<f4" if meta["dtype"] == "float32" else "<f2")
        self.rows = int(meta["rows"])
        self._shards: list[_Shard] = []
        start = 0
        for info in meta["shards"]:
            if verify:
                self._verify(info)
            rows = int(info["rows"])
            acts = np.memmap(self.dir / info["acts"], dtype=self.dtype, mode="r",
                             shape=(rows, self.d))  # fmt: skip
            index = np.memmap(self.dir / info["index"], dtype="<i8", mode="r", shape=(rows, 2))
            self._shards.append(_Shard(acts, index, start))
            start += rows
        if start != self.rows:
            raise DataError(f"{meta_path}: its shards hold {start} rows, it says {self.rows}; "
                            f"{REBUILD}")  # fmt: skip
        self._starts = np.array([s.start for s in self._shards] + [self.rows], dtype=np.int64)

    def _verify(self, info: dict) -> None:
        """Size, sha256 and (for activations) finiteness of one shard, in one streaming pass."""
        rows = int(info["rows"])
        for key, dtype, width in (("acts", self.dtype, self.d), ("index", np.dtype("<i8"), 2)):
            path = self.dir / info[key]
            if not path.exists():
                raise DataError(f"shard {path} is missing; {REBUILD}")
            expected = rows * width * dtype.itemsize
            if path.stat().st_size != expected:
                raise DataError(f"shard {path} holds {path.stat().st_size} bytes, not "
                                f"{expected} ({rows} rows); {REBUILD}")  # fmt: skip
            digest = hashlib.sha256()
            finite = True
            chunk = max(1, (1 << 24) // (width * dtype.itemsize)) * width * dtype.itemsize
            with open(path, "rb") as fh:
                while data := fh.read(chunk):
                    digest.update(data)
                    if key == "acts" and finite:
                        finite = bool(np.isfinite(np.frombuffer(data, dtype=dtype)).all())
            if digest.hexdigest() != info[f"{key}_sha256"]:
                raise DataError(f"shard {path} does not match its sha256 in metadata.json "
                                f"(corrupt); {REBUILD}")  # fmt: skip
            if not finite:
                raise DataError(f"shard {path} holds NaN or infinite values; {REBUILD}")

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def index(self) -> np.ndarray:
        """(rows, 2) int64: sample index and token of every row (read into memory: 16 B/row)."""
        return np.concatenate([np.asarray(s.index) for s in self._shards]) if self._shards \
            else np.zeros((0, 2), dtype=np.int64)  # fmt: skip

    def sample_of_row(self) -> np.ndarray:
        """(rows,) int64: the sample index of every row (8 B a row in memory)."""
        if not self._shards:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.asarray(s.index[:, 0]) for s in self._shards])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), d): the given global rows, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.d), dtype=np.float32)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        for shard_number in np.unique(which):
            picked = which == shard_number
            shard = self._shards[shard_number]
            local = rows[picked] - shard.start
            order = np.argsort(local, kind="stable")  # read each shard in file order
            out_rows = np.flatnonzero(picked)[order]
            out[out_rows] = shard.acts[local[order]]
        return out

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first global row, float32 block) over every row in order, `block_rows` at a time."""
        for shard in self._shards:
            for start in range(0, len(shard.acts), block_rows):
                yield shard.start + start, np.asarray(shard.acts[start : start + block_rows],
                                                      dtype=np.float32)  # fmt: skip
