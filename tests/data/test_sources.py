"""Real dataset code paths end to end, against a local HTTP server on 127.0.0.1 serving archives
built here in the official formats. No test reaches any other host."""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import json
import pickle
import re
import socket
import sys
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml

from kdlab.data.datasets import cifar, prepare_dataset, svhn, tinyimagenet
from kdlab.data.download import RemoteFile, fetch
from kdlab.data.loader import load_dataset
from kdlab.errors import DataError
from kdlab.stages import prepare

from ..conftest import tiny_params
from ..training.test_progress import Terminal

RNG = np.random.default_rng(0)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with `Range: bytes=N-` support, and a switch to cut one response short."""

    truncate_once: ClassVar[set[str]] = set()
    requests: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        path = Path(self.directory) / name
        RangeHandler.requests.append((name, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in RangeHandler.truncate_once:
            RangeHandler.truncate_once.discard(name)
            self.wfile.write(body[: len(body) // 2])  # then the connection drops
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    RangeHandler.truncate_once = set()
    RangeHandler.requests = []

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def publish(monkeypatch, name: str, archive: Path) -> None:
    """Point the dataset's official file at our archive's checksum (its URL keeps its name)."""
    module = next(m for m in (cifar, svhn, tinyimagenet) if hasattr(m, name))
    official = getattr(module, name)
    assert Path(official.url).name == archive.name
    monkeypatch.setattr(module, name, RemoteFile(official.url, md5(archive)))


def add_to_tar(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_batch(n: int, label_key: str, classes: int) -> dict:
    return {"batch_label": "testing batch", label_key: RNG.integers(0, classes, n).tolist(),
            "data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)]}  # fmt: skip


def make_cifar10(root: Path) -> tuple[Path, dict]:
    batches = {f"data_batch_{i}": cifar_batch(4, "labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(3, "labels", 10)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 4}
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, batch in {**batches, "batches.meta": meta}.items():
            add_to_tar(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
    return archive, batches


def make_cifar100(root: Path) -> tuple[Path, dict]:
    batches = {
        "train": cifar_batch(6, "fine_labels", 100),
        "test": cifar_batch(5, "fine_labels", 100),
    }
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}  # fmt: skip
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, batch in {**batches, "meta": meta}.items():
            add_to_tar(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
    return archive, batches


def make_svhn(root: Path, name: str, n: int) -> tuple[Path, np.ndarray, np.ndarray]:
    from scipy.io import savemat

    images = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # the official X layout
    labels = RNG.integers(1, 11, (n, 1)).astype(np.uint8)  # 1..10, where 10 stands for 0
    savemat(root / name, {"X": images, "y": labels})
    return root / name, images, labels


def jpeg(colour: tuple[int, int, int], grey: bool = False) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (64, 64), colour)
    if grey:
        img = img.convert("L")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


COLOURS = {"n01443537": (200, 30, 30), "n01629819": (30, 200, 30), "n01641577": (30, 30, 200)}


def make_tinyimagenet(root: Path) -> Path:
    archive = root / "tiny-imagenet-200.zip"
    base = "tiny-imagenet-200"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{base}/wnids.txt", "\n".join(reversed(COLOURS)) + "\n")  # not sorted
        zf.writestr(f"{base}/words.txt",
                    "n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
                    "n01641577\tbullfrog, Rana catesbeiana\nn99999999\tunused\n")  # fmt: skip
        for wnid, colour in COLOURS.items():
            for i in range(2):
                zf.writestr(
                    f"{base}/train/{wnid}/images/{wnid}_{i}.JPEG", jpeg(colour, grey=i == 1)
                )
            zf.writestr(f"{base}/train/{wnid}/{wnid}_boxes.txt", "")
        annotations = []
        for i, wnid in enumerate(["n01641577", "n01443537", "n01629819", "n01443537"]):
            zf.writestr(f"{base}/val/images/val_{i}.JPEG", jpeg(COLOURS[wnid]))
            annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
        zf.writestr(f"{base}/val/val_annotations.txt", "\n".join(annotations) + "\n")
        zf.writestr(f"{base}/test/images/test_0.JPEG", jpeg((9, 9, 9)))
    return archive


def to_nhwc(batch: dict) -> np.ndarray:
    return batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_cifar10(server, tmp_path, monkeypatch):
    root, url = server
    archive, batches = make_cifar10(root)
    publish(monkeypatch, "CIFAR10", archive)
    meta = prepare_dataset("cifar10", tmp_path / "cifar10", tmp_path / "dl", mirror=url)
    data = load_dataset(tmp_path / "cifar10")
    train_batches = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert np.array_equal(data.train.images.permute(0, 2, 3, 1).numpy(),
                          np.concatenate([to_nhwc(b) for b in train_batches]))  # fmt: skip
    assert data.train.labels.tolist() == list(
        itertools.chain(*(b["labels"] for b in train_batches))
    )
    assert np.array_equal(
        data.test.images.permute(0, 2, 3, 1).numpy(), to_nhwc(batches["test_batch"])
    )
    assert meta["classes"][3] == "class3" and meta["image_shape"] == [32, 32, 3]
    assert meta["splits"] == {"train": 20, "test": 3}
    assert RangeHandler.requests == [("cifar-10-python.tar.gz", None)]


def test_cifar100(server, tmp_path, monkeypatch):
    root, url = server
    archive, batches = make_cifar100(root)
    publish(monkeypatch, "CIFAR100", archive)
    meta = prepare_dataset("cifar100", tmp_path / "cifar100", tmp_path / "dl", mirror=url)
    data = load_dataset(tmp_path / "cifar100")
    assert data.train.labels.tolist() == batches["train"]["fine_labels"]
    assert np.array_equal(data.test.images.permute(0, 2, 3, 1).numpy(), to_nhwc(batches["test"]))
    assert meta["num_classes"] == 100 and meta["classes"][99] == "fine99"


def test_svhn(server, tmp_path, monkeypatch):
    root, url = server
    train, train_x, train_y = make_svhn(root, "train_32x32.mat", 7)
    test, test_x, test_y = make_svhn(root, "test_32x32.mat", 5)
    publish(monkeypatch, "SVHN_TRAIN", train)
    publish(monkeypatch, "SVHN_TEST", test)
    prepare_dataset("svhn", tmp_path / "svhn", tmp_path / "dl", mirror=url)
    data = load_dataset(tmp_path / "svhn")
    assert np.array_equal(
        data.train.images.permute(0, 2, 3, 1).numpy(), train_x.transpose(3, 0, 1, 2)
    )
    assert data.train.labels.tolist() == (train_y.reshape(-1) % 10).tolist()
    assert data.test.labels.tolist() == (test_y.reshape(-1) % 10).tolist()
    assert np.array_equal(
        data.test.images.permute(0, 2, 3, 1).numpy(), test_x.transpose(3, 0, 1, 2)
    )
    assert data.train.labels.min() >= 0 and data.train.labels.max() <= 9


def test_tinyimagenet_uses_the_official_val_split_as_test(server, tmp_path, monkeypatch):
    root, url = server
    publish(monkeypatch, "TINYIMAGENET", make_tinyimagenet(root))
    meta = prepare_dataset("tinyimagenet", tmp_path / "tin", tmp_path / "dl", mirror=url)
    data = load_dataset(tmp_path / "tin")
    wnids = sorted(COLOURS)
    assert meta["classes"] == ["goldfish", "European fire salamander", "bullfrog"]
    assert meta["image_shape"] == [64, 64, 3] and meta["splits"] == {"train": 6, "test": 4}
    # Every image's colour identifies its class: labels follow the images.
    for split in (data.train, data.test):
        for image, label in zip(split.images, split.labels, strict=True):
            mean_rgb = image.float().mean(dim=(1, 2))
            expected = COLOURS[wnids[label]]
            if image[0].equal(image[1]):  # the greyscale copy, converted to RGB
                continue
            assert np.allclose(mean_rgb.numpy(), expected, atol=6), (label, mean_rgb)
    # val_0..3 are n01641577, n01443537, n01629819, n01443537; classes are the sorted wnids.
    assert data.test.labels.tolist() == [2, 0, 1, 0]
    assert not list((tmp_path).glob(".tin-scratch.*"))  # scratch is removed


def test_interrupted_download_resumes(server, tmp_path, monkeypatch):
    root, url = server
    archive, _ = make_cifar10(root)
    publish(monkeypatch, "CIFAR10", archive)
    RangeHandler.truncate_once = {"cifar-10-python.tar.gz"}
    with pytest.raises(DataError, match="run prepare again to resume it"):
        prepare_dataset("cifar10", tmp_path / "cifar10", tmp_path / "dl", mirror=url)
    part = tmp_path / "dl" / "cifar-10-python.tar.gz.part"
    assert 0 < part.stat().st_size < archive.stat().st_size
    assert not (tmp_path / "cifar10").exists()
    prepare_dataset("cifar10", tmp_path / "cifar10", tmp_path / "dl", mirror=url)
    # The first response was cut after half of the bytes; the re-run asks only for the rest.
    assert RangeHandler.requests == [
        ("cifar-10-python.tar.gz", None),
        ("cifar-10-python.tar.gz", f"bytes={archive.stat().st_size // 2}-"),
    ]
    assert not part.exists()
    assert (tmp_path / "dl" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert load_dataset(tmp_path / "cifar10").meta["splits"] == {"train": 20, "test": 3}


def test_a_download_shows_its_bytes_on_a_terminal(server, tmp_path, monkeypatch):
    root, url = server
    archive, _ = make_cifar10(root)
    publish(monkeypatch, "CIFAR10", archive)
    monkeypatch.setattr(sys, "stderr", Terminal())
    prepare_dataset("cifar10", tmp_path / "cifar10", tmp_path / "dl", mirror=url)
    shown = sys.stderr.getvalue()
    assert "cifar-10-python.tar.gz" in shown and "100%" in shown and "B/s" in shown, shown


def test_corrupt_archive_stops_and_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    archive, _ = make_cifar10(root)
    publish(monkeypatch, "CIFAR10", archive)
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # the server now serves a corrupted copy
    archive.write_bytes(bytes(blob))
    with pytest.raises(
        DataError, match=r"has MD5 [0-9a-f]{32}, expected [0-9a-f]{32}: the download is corrupt"
    ):
        prepare_dataset("cifar10", tmp_path / "cifar10", tmp_path / "dl", mirror=url)
    assert not (tmp_path / "cifar10").exists()
    assert list((tmp_path / "dl").iterdir()) == []  # neither the bad file nor a .part


def test_no_network_says_login_node_and_dvc_push(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "0" * 32)
    with pytest.raises(DataError) as excinfo:
        fetch(remote, tmp_path, mirror=f"http://127.0.0.1:{port}")
    message = str(excinfo.value)
    assert "login node" in message and "dvc push" in message and "\n" not in message


def test_prepare_stage_reads_the_mirror_from_params(server, tmp_path, monkeypatch):
    root, url = server
    archive, _ = make_cifar10(root)
    publish(monkeypatch, "CIFAR10", archive)
    params = tiny_params(**{"data.name": "cifar10", "data.mirror": url})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data" / "cifar10"
    argv = ["--params", str(tmp_path / "params.yaml"), "--out", str(out),
            "--downloads", str(tmp_path / "data" / ".downloads")]  # fmt: skip
    assert prepare.main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["name"] == "cifar10"
