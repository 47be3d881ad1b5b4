"""Fault injection for tests: SIGKILL a whole `dvc repro` at a chosen file write.

Copied into a test repository's `src/` (the stages run with PYTHONPATH=src, so Python imports it
at start-up in every stage process); kdlab's own code has no test hooks. With
`KDLAB_KILL_ON_FSYNC=<regex>@<n>` set, the n-th `os.fsync` of a file whose path matches the
regex first truncates that file to half its size (a write cut short), then kills the process
group: the stage and the `dvc repro` that runs it, as a node failure or `kill -9` would. With
`KDLAB_ENOSPC_ON_FSYNC=<regex>@<n>`, that fsync fails with ENOSPC instead: the disk filled up
while the stage ran, after DVC had removed its outputs.
"""

import errno
import os
import re
import signal


def _kill(fd, path):
    os.ftruncate(fd, os.fstat(fd).st_size // 2)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _disk_full(fd, path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _wrap_fsync(spec, fault, repeat):
    """os.fsync, with `fault` at the n-th fsync of a path matching the regex (and every later
    one when `repeat`)."""
    pattern, _, nth = spec.rpartition("@")
    regex, target, seen, real_fsync = re.compile(pattern), int(nth), [0], os.fsync

    def _fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        if regex.search(path):
            seen[0] += 1
            if seen[0] == target or (repeat and seen[0] > target):
                fault(fd, path)
        return real_fsync(fd)

    os.fsync = _fsync


if os.environ.get("KDLAB_KILL_ON_FSYNC"):
    _wrap_fsync(os.environ["KDLAB_KILL_ON_FSYNC"], _kill, repeat=False)
if os.environ.get("KDLAB_ENOSPC_ON_FSYNC"):
    _wrap_fsync(os.environ["KDLAB_ENOSPC_ON_FSYNC"], _disk_full, repeat=True)
