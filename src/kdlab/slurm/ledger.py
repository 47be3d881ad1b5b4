"""The ledger of submissions: experiment name -> job id, attempts, workspace, commit.

One JSON file in the repository (`.kdlab/slurm/ledger.json`, git-ignored), rewritten atomically
under a lock, so two `kdlab slurm submit` runs at once cannot submit the same experiment twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.fsutil import write_bytes_atomic

LEDGER_VERSION = 1


@dataclasses.dataclass
class JobRecord:
    name: str
    job_id: str
    commit: str
    attempts: int
    workspace: str
    log: str
    submitted: str
    """ISO time of the latest submission."""
    job_ids: list[str] = dataclasses.field(default_factory=list)
    """Every job id this experiment had, oldest first."""


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, JobRecord] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                self.records = {n: JobRecord(**r) for n, r in raw["experiments"].items()}
            except (ValueError, KeyError, TypeError) as exc:
                raise KdlabError(
                    f"the SLURM ledger {path} is corrupt ({exc.__class__.__name__}); move it "
                    "aside and run `kdlab slurm submit` again (live jobs are found by job name)"
                ) from None

    def get(self, name: str) -> JobRecord | None:
        return self.records.get(name)

    def put(self, record: JobRecord) -> None:
        self.records[record.name] = record

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": LEDGER_VERSION,
            "experiments": {n: dataclasses.asdict(r) for n, r in sorted(self.records.items())},
        }
        write_bytes_atomic(self.path, (json.dumps(payload, indent=2) + "\n").encode())


@contextlib.contextmanager
def locked_ledger(path: Path) -> Iterator[Ledger]:
    """The ledger, exclusively; saved when the block ends, even on an error, so that every job
    that was submitted stays recorded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        ledger = Ledger(path)
        try:
            yield ledger
        finally:
            ledger.save()
            fcntl.flock(handle, fcntl.LOCK_UN)
