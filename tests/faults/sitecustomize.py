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

_spec = os.environ.get("KDLAB_KILL_ON_FSYNC")
if _spec:
    _pattern, _, _nth = _spec.rpartition("@")
    _regex, _target, _seen = re.compile(_pattern), int(_nth), [0]
    _real_fsync = os.fsync

    def _fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        if _regex.search(path):
            _seen[0] += 1
            if _seen[0] == _target:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size // 2)
                os.killpg(os.getpgid(0), signal.SIGKILL)
        return _real_fsync(fd)

    os.fsync = _fsync

_full = os.environ.get("KDLAB_ENOSPC_ON_FSYNC")
if _full:
    _full_pattern, _, _full_nth = _full.rpartition("@")
    _full_regex, _full_target, _full_seen = re.compile(_full_pattern), int(_full_nth), [0]
    _fsync_before_full = os.fsync

    def _fsync_full(fd):
        path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        if _full_regex.search(path):
            _full_seen[0] += 1
            if _full_seen[0] >= _full_target:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return _fsync_before_full(fd)

    os.fsync = _fsync_full
