"""`nas.search --nni-config remote.yml`: NNI's remote training service against a real OpenSSH server on loopback.

The "remote" machine is this one, reached over SSH as a user made for the test (see loopback_ssh), with a Python of
its own that has effnas's dependencies but not effnas: trials run the code NNI uploads. PostgreSQL is the store
both sides reach.
"""

import contextlib
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from loopback_ssh import USER, loopback_machine, unavailable
from sqlalchemy import create_engine, inspect
from test_parallel import SLOW, TINY, TRIAL_PROCESS, listening_addresses, rows, run, search_command, wait_for
from test_search import make_cifar

from db.session import driver_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def machine():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with loopback_machine() as loopback:
        yield loopback


@pytest.fixture
def remote_config(tmp_path, machine):
    path = tmp_path / "remote.yml"
    path.write_text(machine.nni_config())
    return str(path)


def remote_trials() -> list[psutil.Process]:
    """The test user's Python processes that run an NNI trial (not the shell that started them)."""
    found = []
    for process in psutil.process_iter(["username", "cmdline"]):
        command = process.info["cmdline"] or []
        if process.info["username"] == USER and command and "python" in command[0] and TRIAL_PROCESS in command:
            found.append(process)
    return found


def user_pythons() -> list[str]:
    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["username", "cmdline"])
            if p.info["username"] == USER and "python" in " ".join(p.info["cmdline"] or [])]


def reset_connections(keep) -> int:
    """Resets the remote user's TCP connections that `keep(connection)` selects, as a network that drops does: the
    remote end is aborted, and this end gets a reset. How many were reset."""
    reset = 0
    for process in psutil.process_iter(["username"]):
        if process.info["username"] != USER:
            continue
        with contextlib.suppress(psutil.Error):
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_ESTABLISHED and keep(connection):
                    subprocess.run(["ss", "-K", "state", "established", "src", connection.laddr.ip, "sport", "=",
                                    str(connection.laddr.port), "dst", connection.raddr.ip, "dport", "=",
                                    str(connection.raddr.port)], check=True, capture_output=True)
                    reset += 1
    return reset


def test_remote_trials_land_once_with_the_architectures_of_an_in_process_search(tmp_path, pg_url, machine,
                                                                                remote_config):
    """The manager's SSH connection and the trial keeper's channel to the manager are reset mid-search, as by a
    network that drops for a moment: the search reconnects and nothing it stores changes."""
    serial = f"sqlite:///{tmp_path / 'serial.db'}"
    assert run(search_command(serial, "--trials", "3", "--no-reference", *TINY), tmp_path).returncode == 0

    proc = subprocess.Popen(search_command(pg_url, "--trials", "3", "--no-reference", "--workers", "2",
                                           "--nni-config", remote_config, *TINY),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = []
    for line in proc.stderr:
        before.append(line)
        if line.startswith("NNI manager:"):
            break
    # The remote machine is reached over loopback: the manager, which has no authentication, listens there only.
    port = int(re.search(r"port (\d+) on 127\.0\.0\.1", before[-1]).group(1))
    assert set(wait_for(lambda: listening_addresses(port), 60, "NNI's manager to listen")) == {"127.0.0.1"}
    wait_for(lambda: _training_rows(pg_url) >= 1, 180, "a trial training on the remote machine")
    assert reset_connections(lambda c: c.laddr.port == machine.port) >= 1  # sshd's end of the manager's SSH
    time.sleep(2)
    assert reset_connections(lambda c: c.raddr.port == port) >= 1  # the trial keeper's channel to the manager
    out, err = proc.communicate(timeout=600)
    err = "".join(before) + err
    assert proc.returncode == 0, err
    assert "Remote machines ready" in err and "(remote training service)" in err
    expected = [(r["number"], r["arch_key"], r["status"], r["flops"], r["accuracy"]) for r in rows(serial)]
    got = [(r["number"], r["arch_key"], r["status"], r["flops"], r["accuracy"]) for r in rows(pg_url)]
    assert got == expected
    assert all(r["attempts"] == 1 for r in rows(pg_url))
    manager_log = "".join(path.read_text() for path in tmp_path.glob(".effnas/nni-experiments/*/log/nnimanager.log"))
    assert "SSH connection error" in manager_log
    # When the keeper's channel stays lost, NNI asks over SSH whether the keeper lives; that check must run over a
    # new connection (nni_manager_preload.js), or NNI takes a live keeper for dead. Under a loaded CI the keeper
    # can also give up reconnecting on its own (NNI's Python client retries for about 10 s): NNI then finds its
    # process gone, says so, and the rows above still match.
    assert "Failed to check trail keeper status" not in manager_log  # sic: NNI's spelling
    assert "Trial keeper failed" not in manager_log or "reason: 'Process" in manager_log
    # NNI uploaded effnas's code, not the folder the search was started from.
    assert not list(tmp_path.glob(".effnas/nni-experiments/trial-code-*"))
    # The machine's Python ran the trials and was never asked to install anything.
    commands = machine.python_commands()
    assert any(TRIAL_PROCESS in command for command in commands)
    assert not [command for command in commands if "pip" in command.split()]


def test_remote_trials_dying_at_start_or_in_training_are_recorded_failed_and_the_search_goes_on(
        tmp_path, pg_url, machine, remote_config):
    machine.end_next_trial_at_start()
    proc = subprocess.Popen(search_command(pg_url, "--trials", "4", "--workers", "2", "--no-reference",
                                           "--nni-config", remote_config, *SLOW),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = wait_for(lambda: remote_trials()[:1], 180, "a trial process under the remote user")[0]
    victim.kill()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    stored = rows(pg_url)
    assert len(stored) == 4 and len({r["arch_key"] for r in stored}) == 4
    # Exactly the two trials that died fail: the one ended at start and the one killed in training.
    failed = [r for r in stored if r["status"] == "failed"]
    assert len(failed) == 2 and all("trial process ended without storing a result" in r["error"] for r in failed)
    assert all(r["status"] == "complete" for r in stored if r not in failed)
    assert "2 failed" in out


def test_a_remote_trial_process_that_starts_late_trains_its_own_candidate(tmp_path, pg_url, machine,
                                                                        remote_config):
    """The other trial process asks NNI for its candidate first; each must still train the one made for it, or the
    search would read an untrained candidate's row when the other trial ends, and call it failed."""
    machine.start_next_trial_late()
    result = run(search_command(pg_url, "--trials", "2", "--workers", "2", "--no-reference",
                                "--nni-config", remote_config, *TINY), tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert not (machine.watch_folder / "start-next-trial-late").exists()  # a trial process did start late
    stored = rows(pg_url)
    assert len(stored) == 2 and all(r["status"] == "complete" for r in stored), stored
    assert "without storing a result" not in result.stdout + result.stderr


def test_ctrl_c_leaves_no_process_of_the_remote_user_and_resume_finishes(tmp_path, pg_url, remote_config):
    proc = subprocess.Popen(search_command(pg_url, "--trials", "6", "--time-budget", "none", "--workers", "2",
                                           "--no-reference", "--nni-config", remote_config, *SLOW),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(remote_trials()) == 2, 180, "two trial processes under the remote user")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume 1" in err and "Traceback" not in err
    deadline = time.time() + 30
    while user_pythons() and time.time() < deadline:
        time.sleep(0.5)
    assert user_pythons() == []
    interrupted = [r for r in rows(pg_url) if r["status"] == "interrupted"]
    assert interrupted and not [r for r in rows(pg_url) if r["status"] in ("queued", "running")]

    total = len(rows(pg_url))
    resumed = run([sys.executable, "-m", "nas.search", "--db", pg_url, "--resume", "1", "--trials", str(total),
                   "--nni-config", remote_config, "--workers", "2"], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    stored = rows(pg_url)
    assert len(stored) == total and all(r["status"] == "complete" for r in stored)


@pytest.mark.parametrize(
    "machine_fields,message",
    [
        ({"port": 1}, "cannot reach the SSH server"),
        ({"sshKeyFile": "OTHER_KEY"}, "refused the login of effnas-ssh-test"),
        ({"pythonPath": "/nonexistent/bin"}, "its Python lacks torch"),
        ({}, "is not a folder it can read"),
    ],
)
def test_a_machine_that_cannot_run_trials_is_one_line_before_anything_is_stored(tmp_path, pg_url, machine,
                                                                                machine_fields, message):
    if machine_fields.get("sshKeyFile") == "OTHER_KEY":
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        machine_fields = {"sshKeyFile": str(other)}
    data = []
    if not machine_fields:  # data this machine reads, in a folder the remote user cannot (pytest's are 0700)
        data = ["--dataset", "cifar10", "--data-dir", str(make_cifar(tmp_path / "cifar"))]
    config = tmp_path / "remote.yml"
    config.write_text(machine.nni_config(**machine_fields))
    result = run(search_command(pg_url, "--trials", "2", "--workers", "2", "--nni-config", str(config), *data),
                 tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"remote machine {USER}@127.0.0.1" in lines[0] and message in lines[0], lines
    engine = create_engine(driver_url(pg_url))
    try:
        assert "searches" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_lost_machine_interrupts_its_trials_the_search_goes_on_and_resume_trains_them(tmp_path, pg_url,
                                                                                      remote_config):
    """Every process of the remote user dies at once, SSH sessions and NNI's trial keeper included: as when the
    connection or the machine goes. NNI reconnects for the trials still to come."""
    proc = subprocess.Popen(search_command(pg_url, "--trials", "4", "--workers", "2", "--no-reference",
                                           "--nni-config", remote_config, *SLOW),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _training_rows(pg_url) == 2, 180, "two trials training on the remote machine")
    subprocess.run(["pkill", "-KILL", "-u", USER], check=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    stored = rows(pg_url)
    assert len(stored) == 4 and len({r["arch_key"] for r in stored}) == 4
    lost = [r for r in stored if r["status"] == "interrupted"]
    assert len(lost) == 2 and all("remote machine was lost" in r["error"] for r in lost)
    assert all(r["status"] == "complete" for r in stored if r not in lost)
    assert "interrupted: its remote machine was lost" in err

    resumed = run([sys.executable, "-m", "nas.search", "--db", pg_url, "--resume", "1", "--nni-config",
                   remote_config, "--workers", "2"], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    again = {r["id"]: r for r in rows(pg_url)}
    assert len(again) == 4 and all(r["status"] == "complete" for r in again.values())
    assert all(again[r["id"]]["attempts"] == r["attempts"] + 1 for r in lost)


def _training_rows(url: str) -> int:
    try:
        return sum(r["status"] == "running" for r in rows(url))
    except Exception:  # the search has not created its tables yet
        return 0
