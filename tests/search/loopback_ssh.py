"""A real OpenSSH server on 127.0.0.1 for the remote-trial tests, with a user and key pair made for the run.

`loopback_machine()` starts Debian's sshd with a configuration of its own: 127.0.0.1 only, a port of its own,
public-key logins only, one allowed user. The user and both keys are created at run time and removed afterwards,
with the user's home and whatever NNI left there. The user's Python is a virtual environment of Debian's
python3 with effnas's dependencies but not effnas itself: trial processes run the code NNI uploads. It is kept
between runs under REMOTE_PYTHON (rebuilt when the dependencies change), since installing torch takes minutes.

The machine's pythonPath is a folder of wrappers around that Python, which the tests watch and steer: every
command line the machine's Python is given is logged (`python_commands`); `end_next_trial_at_start` makes the
next NNI trial process end before its Python starts, as one killed at start, or on a machine that fails it, does;
`start_next_trial_late` makes the next one start LATE_START_SECONDS late, as on a loaded machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
USER = "effnas-ssh-test"
REMOTE_PYTHON = Path("/var/cache/effnas-tests/remote-python")
TORCH = "torch==2.13.0"  # the local CPU wheel, as in the Makefile
TRIAL_MODULE = "nni.nas.execution.training_service"  # what NNI's trial command runs
LATE_START_SECONDS = 15


@dataclass(frozen=True)
class LoopbackMachine:
    host: str
    port: int
    user: str
    key_file: Path
    python_path: Path
    watch_folder: Path

    def python_commands(self) -> list[str]:
        """Every command line the machine's Python was given so far, oldest first."""
        log = self.watch_folder / "commands"
        return log.read_text().splitlines() if log.exists() else []

    def end_next_trial_at_start(self) -> None:
        (self.watch_folder / "end-next-trial").touch()

    def start_next_trial_late(self) -> None:
        (self.watch_folder / "start-next-trial-late").touch()

    def nni_config(self, **machine: object) -> str:
        """An --nni-config for NNI's remote service with this machine; `machine` overrides its entry's fields."""
        entry = {"host": self.host, "port": self.port, "user": self.user, "sshKeyFile": str(self.key_file),
                 "pythonPath": str(self.python_path), **machine}
        lines = "\n".join(f"      {key}: {value}" for key, value in entry.items())
        return f"nniManagerIp: 127.0.0.1\ntrainingService:\n  platform: remote\n  machineList:\n    -\n{lines}\n"


def unavailable() -> str | None:
    """Why this machine cannot run the loopback SSH tests, or None."""
    if os.geteuid() != 0:
        return "the loopback SSH server and its user need root"
    if not SSHD.exists():
        return "Debian's openssh-server is not installed (.ci/run installs it)"
    if shutil.which("ss") is None:
        return "iproute2's ss is not installed (.ci/run installs it)"
    if shutil.which("/usr/bin/python3") is None:
        return "Debian's python3 is not installed"
    return None


def _dependencies() -> list[str]:
    required = importlib.metadata.requires("effnas") or []
    dependencies = [d for d in required if "extra ==" not in d and not d.startswith("torch")]
    return [TORCH, *dependencies]


def remote_python() -> Path:
    """The bin folder of a Python with effnas's dependencies that any user can run, built once per set of them."""
    dependencies = _dependencies()
    stamp = REMOTE_PYTHON / "effnas-dependencies.sha256"
    digest = hashlib.sha256("\n".join(dependencies).encode()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest):
        shutil.rmtree(REMOTE_PYTHON, ignore_errors=True)
        REMOTE_PYTHON.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(REMOTE_PYTHON)], check=True)
        pip = [str(REMOTE_PYTHON / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, TORCH], check=True, capture_output=True)
        subprocess.run([*pip, *dependencies[1:]], check=True, capture_output=True)
        stamp.write_text(digest)
    for folder in (REMOTE_PYTHON.parent, REMOTE_PYTHON):
        folder.chmod(0o755)
    return REMOTE_PYTHON / "bin"


def _watched_python(folder: Path, real: Path) -> tuple[Path, Path]:
    """A bin folder whose python and python3 run `real`'s, logging each command line into the watch folder and
    ending the next trial process at start while the watch folder holds "end-next-trial", and starting it late
    while it holds "start-next-trial-late"; both folders."""
    bin_folder, watch = folder / "bin", folder / "watch"
    bin_folder.mkdir(parents=True)
    watch.mkdir()
    (watch / "commands").touch()
    script = (f'#!/bin/sh\nprintf "%s\\n" "$*" >> {watch}/commands\n'
              f'case "$*" in *{TRIAL_MODULE}*) rm {watch}/end-next-trial 2>/dev/null && exit 1\n'
              f'  rm {watch}/start-next-trial-late 2>/dev/null && sleep {LATE_START_SECONDS} ;; esac\n'
              f'exec {real}/python3 "$@"\n')
    for name in ("python", "python3"):
        (bin_folder / name).write_text(script)
        (bin_folder / name).chmod(0o755)
    for path, mode in ((folder, 0o755), (bin_folder, 0o755), (watch, 0o777), (watch / "commands", 0o666)):
        path.chmod(mode)  # the remote user runs the wrappers, logs, and takes the file that ends a trial
    return bin_folder, watch


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _remove_user() -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(USER)
        subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
        time.sleep(0.5)
        subprocess.run(["userdel", "--remove", "--force", USER], capture_output=True)


def _create_user(public_key: str) -> None:
    _remove_user()  # left by a run that was killed
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    # A locked account ("!") refuses even key logins; "*" allows keys and no password.
    subprocess.run(["usermod", "--password", "*", USER], check=True)
    entry = pwd.getpwnam(USER)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(public_key)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    (ssh_dir / "authorized_keys").chmod(0o600)


def _sshd_config(folder: Path, port: int) -> Path:
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"PermitRootLogin no\nAllowUsers {USER}\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    return config


def _wait_listening(port: int, server: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sshd ended at start: {server.stderr.read()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError("sshd did not listen")


@contextlib.contextmanager
def loopback_machine() -> Iterator[LoopbackMachine]:
    """Starts the server and creates the user; stops and removes both, keys included, on the way out."""
    real_python = remote_python()
    folder = Path(tempfile.mkdtemp(prefix="effnas-sshd-"))
    wrappers = Path(tempfile.mkdtemp(prefix="effnas-remote-python-"))
    server = None
    try:
        python_path, watch = _watched_python(wrappers, real_python)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
        _create_user((folder / "client_key.pub").read_text())
        port = _free_port()
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(_sshd_config(folder, port))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_listening(port, server)
        yield LoopbackMachine("127.0.0.1", port, USER, folder / "client_key", python_path, watch)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        _remove_user()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(wrappers, ignore_errors=True)


if __name__ == "__main__":
    print(remote_python(), file=sys.stderr)
