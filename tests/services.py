"""Real services for integration tests: a single-node SLURM cluster and an sshd on 127.0.0.1.

Both run from a temporary directory (configs, keys, sockets, logs, state), on free ports, and
are stopped by their own pids; nothing under /etc is touched. Starting them needs root (slurmd
runs jobs as the submitting user) and the Debian packages `slurmctld slurmd slurm-client munge
openssh-server` (`.ci/run` installs them). Without them the tests are skipped locally and fail
in CI (`CI` set), so CI can never pass by not running them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
SSH_BINARIES = ("sshd", "ssh-keygen")


def require(binaries: tuple[str, ...], what: str) -> None:
    """Skip (locally) or fail (in CI) when a service's programs are missing or we are not root."""
    missing = [b for b in binaries if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    problem = None
    if missing:
        problem = f"{what} needs {', '.join(missing)} (apt-get install: see .ci/run)"
    elif os.geteuid() != 0:
        problem = f"{what} must be started as root"
    if problem:
        unavailable(what, problem)


def path_without_slurm(tmp_path: Path) -> dict[str, str]:
    """env_extra for `run`: PATH with the venv and git only, as on a machine without SLURM."""
    from .conftest import VENV_BIN

    bin_dir = tmp_path / "no-slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "git").exists():
        (bin_dir / "git").symlink_to(shutil.which("git"))
    return {"PATH": f"{VENV_BIN}{os.pathsep}{bin_dir}"}


def unavailable(what: str, problem: str) -> None:
    """Skip locally, fail in CI: CI must run every test (.ci/run installs what they need)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {what} tests: {problem}")
    pytest.skip(problem)


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: only the given pid, never by name."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------------------------
# SLURM
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    pids: dict[str, Path]

    @property
    def env(self) -> dict[str, str]:
        """Add to a subprocess's environment so every SLURM command talks to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {proc.stderr}")
        return proc

    def job_state(self, job_id: str) -> str:
        out = self.command("scontrol", "show", "job", job_id, check=False).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return "UNKNOWN"

    def stop(self) -> None:
        """Cancel this cluster's jobs (their slurmstepd would outlive slurmd), then the daemons."""
        import getpass

        self.command("scancel", "--full", "-u", getpass.getuser(), check=False)
        with contextlib.suppress(RuntimeError):  # stop the daemons regardless
            wait_for(lambda: not self.command("squeue", "-h", check=False).stdout.strip(), 30,
                     "the cancelled jobs to end")  # fmt: skip
        for name in ("slurmd", "slurmctld", "munged"):
            pid = read_pid(self.pids[name])
            if pid is not None:
                stop_pid(pid)


SLURM_CONF = """\
ClusterName=kdlabtest
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
SchedulerParameters=defer_batch
MpiDefault=none
NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_pid_files(root: Path) -> dict[str, Path]:
    return {
        "munged": root / "munge" / "munged.pid",
        "slurmctld": root / "slurmctld.pid",
        "slurmd": root / "slurmd.pid",
    }


def start_slurm(root: Path) -> SlurmCluster:
    """munged, then slurmctld, then slurmd, all under `root`; waits until the node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            node=node,
            root=root,
            munge_socket=munge_socket,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cpus=os.cpu_count() or 1,
            memory=4000,
        )
    )
    pids = slurm_pid_files(root)
    cluster = SlurmCluster(root, conf, node, pids)
    env = {**os.environ, **cluster.env}
    try:
        subprocess.run(
            [_exe("munged"), f"--key-file={key}", f"--socket={munge_socket}",
             f"--pid-file={pids['munged']}", f"--log-file={root / 'munge' / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}", "--force"],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        subprocess.run([_exe("slurmctld"), "-c", "-f", str(conf)], check=True, env=env)
        wait_for(lambda: read_pid(pids["slurmctld"]) is not None, 30, "slurmctld",
                 root / "slurmctld.log")  # fmt: skip
        subprocess.run([_exe("slurmd"), "-f", str(conf)], check=True, env=env)

        def node_idle() -> bool:
            out = cluster.command("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            return out == "idle"

        wait_for(node_idle, 60, "the node to become idle", root / "slurmd.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ----------------------------------------------------------------------------------------------
# sshd
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SshServer:
    root: Path
    port: int
    user: str
    client_key: Path
    pid_file: Path

    def stop(self) -> None:
        pid = read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid)

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def client_home(self, home: Path) -> dict[str, str]:
        """Environment for ssh clients (dvc): a HOME whose known_hosts holds this server's key,
        so the user's own ~/.ssh is never read or written."""
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        kind, key = (self.root / "host_ed25519.pub").read_text().split()[:2]
        (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        return {"HOME": str(home)}


def start_sshd(root: Path) -> SshServer:
    """sshd on 127.0.0.1 with its own host key and one authorised client key, sftp internal."""
    import pwd

    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    for path in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)  # fmt: skip
    authorized = root / "authorized_keys"
    shutil.copy(client_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    user = pwd.getpwuid(os.geteuid()).pw_name
    port = free_port()
    pid_file = root / "sshd.pid"
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid_file}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n"
        "StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = root / "sshd.log"
    subprocess.run([_exe("sshd"), "-f", str(config), "-E", str(log)], check=True)
    server = SshServer(root, port, user, client_key, pid_file)

    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(lambda: read_pid(pid_file) is not None and accepting(), 20, "sshd", log)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    """Start or stop a throwaway cluster by hand, to try `kdlab slurm` on one machine (as root):

    python -m tests.services start /tmp/kdlab-slurm    # prints the SLURM_CONF to export
    python -m tests.services stop /tmp/kdlab-slurm
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("start", "stop"):
        print(main.__doc__, file=sys.stderr)
        return 2
    root = Path(args[1]).resolve()
    if args[0] == "start":
        cluster = start_slurm(root)
        print(f"single-node SLURM cluster running on {cluster.node}; now run:\n"
              f"export SLURM_CONF={cluster.conf}")  # fmt: skip
    else:
        node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
        SlurmCluster(root, root / "slurm.conf", node, slurm_pid_files(root)).stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
