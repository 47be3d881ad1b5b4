"""Stopping on a signal between batches, and training a shared run only once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from kdlab.training import stop
from kdlab.training.shared_teacher import run_once


def test_signal_stops_at_the_next_check_and_pidfile_is_written(tmp_path, monkeypatch):
    pidfile = tmp_path / "train.pid"
    monkeypatch.setenv(stop.PIDFILE_ENV, str(pidfile))
    before = signal.getsignal(signal.SIGUSR1)
    with stop.stop_on_signal():
        assert pidfile.read_text().strip() == str(os.getpid())
        stop.check()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(stop.StopTraining, match="stopped by SIGUSR1; no output was written"):
            stop.check()
    assert not pidfile.exists()
    assert signal.getsignal(signal.SIGUSR1) == before
    stop.check()  # outside the block a stale request is forgotten


def _train_in_process(store: str, out: str, counter: str) -> None:
    def train() -> None:
        with open(counter, "a") as handle:
            handle.write("trained\n")
        time.sleep(1.0)  # long enough for the other process to be waiting on the lock
        (Path(out) / "model").mkdir(parents=True)
        (Path(out) / "model" / "model.pt").write_text(f"weights from {out}")

    run_once(Path(store), "f" * 64, {"model": Path(out) / "model"}, train)


def test_concurrent_runs_train_once_and_the_other_copies(tmp_path):
    store, counter = tmp_path / "store", tmp_path / "count.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_train_in_process, args=(str(store), str(tmp_path / f"ws{i}"),
                                                          str(counter)))
             for i in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.read_text().splitlines() == ["trained"]
    models = {(tmp_path / f"ws{i}/model/model.pt").read_text() for i in range(2)}
    assert len(models) == 1  # both workspaces hold the one trained model
    assert (store / ("f" * 64) / "model" / "model.pt").exists()


def test_failed_training_publishes_nothing(tmp_path):
    def broken() -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_once(tmp_path / "store", "a" * 64, {"model": tmp_path / "model"}, broken)
    assert not (tmp_path / "store" / ("a" * 64)).exists()
    calls = []
    run_once(tmp_path / "store", "a" * 64, {"model": tmp_path / "model"},
             lambda: calls.append((tmp_path / "model").mkdir()))  # fmt: skip
    assert len(calls) == 1  # the next attempt trains again
