"""A real single-node Slurm cluster for tests: munged + slurmctld + slurmd on localhost.

Debian's ``slurm-wlm`` daemons (installed with apt when running as root and missing), configured
for this machine's cores and memory, with every file (config, state, spool, logs, munge key and
socket) in a temp dir and free ports, so nothing of a real installation is touched. Start-up
takes about a second; ``stop()`` shuts the daemons down. Clients find the cluster through the
``SLURM_CONF`` variable in ``env()``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel"]


class SlurmUnavailable(RuntimeError):
    """The cluster cannot run here; the message says why."""


def _missing() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [d for d in DAEMONS if shutil.which(d, path=search) is None]


def ensure_installed() -> None:
    """Install Debian's Slurm and munge with apt when missing (root only)."""
    if not _missing():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            f"Slurm is not installed ({', '.join(_missing())} missing) and this is not root "
            f"with apt-get; install it: apt-get install {' '.join(PACKAGES)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    # The packages' scripts would start system-wide daemons, which fail without a config (and
    # fail the install); policy-rc.d is Debian's way to say "do not start services here".
    # This cluster runs its own daemons from a temp dir.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text(
            "#!/bin/sh\n# written by tests/slurm_cluster.py during apt-get\nexit 101\n"
        )
        policy.chmod(0o755)
    try:
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            proc = subprocess.run(install, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SlurmUnavailable(
                    f"apt-get install {' '.join(PACKAGES)} failed:\n"
                    f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                )
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    if _missing():
        raise SlurmUnavailable(f"still missing after apt-get: {', '.join(_missing())}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.cpus = os.cpu_count() or 1
        self.node = socket.gethostname().split(".")[0]
        self._env = dict(os.environ, SLURM_CONF=str(self.conf))
        search = os.pathsep.join(["/usr/sbin", "/sbin", self._env.get("PATH", "")])
        self._env["PATH"] = search

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) with SLURM_CONF pointing at this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self._env, capture_output=True, text=True, timeout=60)

    def _logs(self) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*.log")):
            out.append(
                f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            )
        return "\n".join(out)

    def start(self, timeout: float = 30) -> None:
        ensure_installed()
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        r.chmod(0o755)
        (r / "munge").chmod(0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(128))
        key.chmod(0o600)
        sock = r / "munge" / "munge.socket"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER") or str(os.geteuid())
        mem = int(_mem_mb() * 0.9)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=e2easrtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={sock}",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/builtin",
                    "SchedulerParameters=batch_sched_delay=0",
                    # sbatch --wait polls every 2 s while this stays short (else 2, 8, 32 s)
                    "MinJobAge=5",
                    "ReturnToService=2",
                    f"DefMemPerCPU={mem // self.cpus}",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} "
                    "State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        munged = shutil.which("munged", path=self._env["PATH"]) or "munged"
        steps = [
            [
                munged,
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={r}/log/munged.log",
                f"--pid-file={r}/munge/munged.pid",
                f"--seed-file={r}/munge/munged.seed",
            ],
            ["slurmctld", "-f", str(self.conf), "-i"],
            ["slurmd", "-f", str(self.conf)],
        ]
        for cmd in steps:
            proc = self._run(*cmd)
            if proc.returncode != 0:
                self.stop()
                raise SlurmUnavailable(
                    f"{' '.join(cmd)} failed ({proc.returncode}): "
                    f"{proc.stderr.strip()}\n{self._logs()}"
                )
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            state = self._run("sinfo", "-h", "-n", self.node, "-o", "%t").stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.2)
        self.stop()
        raise SlurmUnavailable(
            f"node {self.node} not idle after {timeout:.0f} s (state {state!r})\n{self._logs()}"
        )

    def stop(self) -> None:
        """Shut slurmctld and slurmd down, then munged; waits until their pids are gone."""
        self._run("scontrol", "shutdown")
        pids = []
        for f in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid"):
            try:
                pids.append(int((self.root / f).read_text().strip()))
            except (OSError, ValueError):
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids[:2]):
            time.sleep(0.1)
        for pid in pids:  # still up (or munged, which scontrol does not stop): terminate
            if _alive(pid):
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass


def _alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"
