"""Fault injection for tests: SIGKILL a whole `dvc repro` at a chosen file write.

Copied into a test repository's `src/` (the stages run with PYTHONPATH=src, so Python imports it
at start-up in every stage process); kdlab's own code has no test hooks. With
`KDLAB_KILL_ON_FSYNC=<regex>@<n>` set, the n-th `os.fsync` of a file whose path matches the
regex first truncates that file to half its size (a write cut short), then kills the process
group: the stage and the `dvc repro` that runs it, as a node failure or `kill -9` would.
"""

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
