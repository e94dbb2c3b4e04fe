"""`nas.search --workers N`: real NNI manager, real trial processes, real databases (SQLite and PostgreSQL)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from db.session import driver_url
from helpers import run_main

TINY = ["--epochs", "1", "--subset", "300", "--proxy-resolution", "32", "--threads", "1"]
# Long enough per trial (5-20 s on 2 cores) that a test can act while trial processes train.
SLOW = ["--epochs", "1", "--subset", "1500", "--proxy-resolution", "32", "--threads", "1"]
TRIAL_PROCESS = "nni.nas.execution.training_service"


def search_args(db: str, *args: str) -> list[str]:
    return ["--db", db, "--target-flops", "400M", "--strategy", "random", *args]


def search_command(db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "nas.search", *search_args(db, *args)]


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "EFFNAS_DB": ""})


def rows(url: str, search_id: int = 1) -> list[dict]:
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(text(
                "select * from trials where search_id = :s order by number"), {"s": search_id})]
    finally:
        engine.dispose()


def search_worker(url: str) -> str:
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(text("select worker from searches where id = 1")).scalar_one()
    finally:
        engine.dispose()


def trial_processes(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in root.children(recursive=True):
        try:
            if TRIAL_PROCESS in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def listening_addresses(port: int) -> list[str]:
    return [c.laddr.ip for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


@pytest.mark.slow
def test_two_workers_train_in_separate_processes_with_the_results_of_one(tmp_path):
    """Same seed, same thread count: trial processes store exactly what in-process training stores, each
    candidate in a process of its own, and NNI's manager listens on 127.0.0.1 only."""
    serial = f"sqlite:///{tmp_path / 'serial.db'}"
    assert run(search_command(serial, "--trials", "3", *TINY), tmp_path).returncode == 0

    parallel = f"sqlite:///{tmp_path / 'parallel.db'}"
    proc = subprocess.Popen(search_command(parallel, "--trials", "3", "--workers", "2", *TINY), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = []
    for line in proc.stderr:
        before.append(line)
        if line.startswith("NNI manager:"):
            break
    manager_line = before[-1]
    port = int(re.search(r"port (\d+) on 127\.0\.0\.1", manager_line).group(1))
    addresses = wait_for(lambda: listening_addresses(port), 60, "NNI's manager to listen")
    assert set(addresses) == {"127.0.0.1"}
    out, err = proc.communicate(timeout=300)
    err = "".join(before) + err
    assert proc.returncode == 0, err
    assert "Training 2 at a time in trial processes" in err

    expected = [(r["number"], r["role"], r["arch_key"], r["status"], r["accuracy"], r["flops"])
                for r in rows(serial) + rows(serial, 1)]
    got = [(r["number"], r["role"], r["arch_key"], r["status"], r["accuracy"], r["flops"])
           for r in rows(parallel) + rows(parallel, 1)]
    assert sorted(got, key=str) == sorted(expected, key=str)
    stored = rows(parallel)
    assert len(stored) == 4 and {r["role"] for r in stored} == {"reference", "candidate"}
    assert all(r["status"] == "complete" and r["attempts"] == 1 for r in stored)
    workers = [r["worker"] for r in stored]
    assert len(set(workers)) == 4 and search_worker(parallel) not in workers


@pytest.mark.slow
def test_a_killed_trial_process_is_recorded_failed_and_the_search_goes_on(tmp_path, db_url):
    """As when the kernel kills a trial for memory: the process training a candidate dies by SIGKILL."""
    proc = subprocess.Popen(search_command(db_url, "--trials", "4", "--workers", "2", "--no-reference", *SLOW),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def training_process():
        running = [r for r in rows(db_url) if r["status"] == "running"] if _has_rows(db_url) else []
        return running[0] if running else None

    victim = wait_for(training_process, 120, "a trial process that is training")
    pid = int(victim["worker"].rsplit(":", 1)[1])
    assert pid != proc.pid and psutil.pid_exists(pid)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    stored = rows(db_url)
    assert len(stored) == 4 and len({r["arch_key"] for r in stored}) == 4 and len({r["number"] for r in stored}) == 4
    failed = [r for r in stored if r["status"] == "failed"]
    assert [r["id"] for r in failed] == [victim["id"]]
    assert "trial process ended without storing a result" in failed[0]["error"]
    assert all(r["status"] == "complete" for r in stored if r not in failed)
    assert "1 failed" in out


def _has_rows(url: str) -> bool:
    try:
        return bool(rows(url))
    except Exception:  # the search has not created its tables yet
        return False


@pytest.mark.slow
def test_ctrl_c_stops_the_trial_processes_and_resume_finishes_the_search(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    # Far more trials than can end before the signal: from the first hand-out on, trials stay in flight until
    # the search is stopped. Random search proposes the same sequence whatever the budget, so the resume below
    # can ask for exactly the trials stored.
    proc = subprocess.Popen(search_command(db, "--trials", "40", "--time-budget", "none", "--strategy", "random",
                                           "--workers", "2", "--no-reference", *SLOW),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    wait_for(lambda: _has_rows(db) and any(r["status"] == "running" for r in rows(db)), 120, "a running trial")
    helpers = root.children(recursive=True)
    assert trial_processes(root) and len(helpers) >= 4  # manager, fork server, trial clients and trainers
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume 1" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"
    interrupted = [r for r in rows(db) if r["status"] == "interrupted"]
    assert interrupted and not [r for r in rows(db) if r["status"] in ("queued", "running")]

    total = len(rows(db))
    resumed = run([sys.executable, "-m", "nas.search", "--db", db, "--resume", "1", "--workers", "2", "--trials",
                   str(total)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    stored = rows(db)
    assert len(stored) == total and len({r["arch_key"] for r in stored}) == total
    assert all(r["status"] == "complete" for r in stored)
    # Trained once more: a trial that was running counts its second attempt, one still queued its first.
    before = {r["id"]: r["attempts"] for r in interrupted}
    assert all(r["attempts"] == before[r["id"]] + 1 for r in stored if r["id"] in before)


@pytest.mark.slow
def test_sigkill_of_the_search_takes_manager_and_trials_along_and_resume_finishes(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    proc = subprocess.Popen(search_command(db, "--trials", "2", "--workers", "2", "--no-reference", *SLOW),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    wait_for(lambda: _has_rows(db) and any(r["status"] == "running" for r in rows(db)), 120, "a running trial")
    helpers = root.children(recursive=True)
    assert any("nni_node" in " ".join(p.cmdline()) for p in helpers)
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, f"still running after the search was killed: {[p.cmdline() for p in alive]}"

    resumed = run([sys.executable, "-m", "nas.search", "--db", db, "--resume", "1", "--workers", "2"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    stored = rows(db)
    assert len(stored) == 2 and len({r["arch_key"] for r in stored}) == 2
    assert all(r["status"] == "complete" for r in stored)


REMOTE = """trialConcurrency: 2
trainingService:
  platform: remote
  machineList:
    - host: gpu1.example.org
      user: alice
      password: not-used-here
      pythonPath: /opt/effnas/.venv/bin
"""


@pytest.mark.parametrize(
    "config,extra,message",
    [
        (None, ["--workers", "0"], "--workers must be at least 1"),
        (None, ["--workers", "2", "--nni-port", "80"], "--nni-port must be between"),
        (None, ["--workers", "2", "--device", "tpu"], "invalid choice"),
        ("trainingService: [unclosed", [], "is not YAML or JSON"),
        ("- just\n- a list\n", [], "must hold a mapping"),
        ("maxTrialNumber: 10\n", [], "--nni-config may not set maxTrialNumber"),
        ("trialConcurrency: 0\n", [], "trialConcurrency must be a whole number"),
        ("trialConcurrency: 3\n", ["--workers", "2"], "disagree"),
        ("trainingService:\n  platform: nowhere\n", [], "NNI refuses the configuration"),
        (REMOTE, [], "cannot write to a SQLite file"),
    ],
)
def test_bad_parallel_options_give_one_line_exit_2_and_no_database(tmp_path, config, extra, message):
    work = tmp_path / "work"
    work.mkdir()
    args = list(extra)
    if config is not None:
        path = tmp_path / "nni.yml"
        path.write_text(config)
        args += ["--nni-config", str(path)]
    result = run_main("nas.search", *search_args("never.db", *args), cwd=work)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(work.iterdir()) == []


def test_the_manager_listens_where_the_trial_machines_reach_it():
    from effnas.cli import UsageError
    from nas.search.trial_processes import TrialProcessOptions, default_manager_address

    def remote(host: str, **extra) -> TrialProcessOptions:
        service = {"platform": "remote", "machineList": [{"host": host, "user": "u", "sshKeyFile": "k"}]}
        return TrialProcessOptions(workers=2, nni_config={"trainingService": service, **extra})

    assert default_manager_address(TrialProcessOptions(workers=2)) == "127.0.0.1"
    assert default_manager_address(remote("127.0.0.1")) == "127.0.0.1"
    assert default_manager_address(remote("127.0.0.1", nniManagerIp="10.1.2.3")) == "10.1.2.3"
    # A machine on another network is reached from this machine's own address, not from loopback; with no route
    # to it the user is told to name the address.
    try:
        assert default_manager_address(remote("192.0.2.1")) not in ("127.0.0.1", "0.0.0.0")
    except UsageError as exc:
        assert "--nni-address" in str(exc)


def test_missing_nni_config_file_is_named(tmp_path):
    result = run_main("nas.search", *search_args("never.db", "--nni-config", "absent.yml"), cwd=tmp_path)
    assert result.returncode == 2 and "cannot read --nni-config absent.yml" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_documented_remote_example_is_a_configuration_nni_accepts(tmp_path):
    import yaml

    from nas.search.trial_processes import TrialProcessOptions, experiment_config

    readme = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "parallel.md").read_text()
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme, re.S).group(1))
    key = tmp_path / "id_ed25519"  # NNI checks that the SSH key file exists
    key.write_text("key")
    for machine in config["trainingService"]["machineList"]:
        machine["sshKeyFile"] = str(key)
    concurrency = config.pop("trialConcurrency")
    nni_config = experiment_config(TrialProcessOptions(workers=concurrency, nni_config=config))
    assert nni_config.training_service.platform == "remote"
    assert nni_config.trial_concurrency == concurrency


def test_the_trial_fork_server_runs_only_nni_trials_and_ends_with_the_search(tmp_path):
    """Anyone who can reach its socket could run a command: it runs NNI's trial entry and nothing else."""
    from nas.search.trial_forkserver import run_client

    socket_path = str(tmp_path / "trials.sock")
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = subprocess.Popen([sys.executable, "-m", "nas.search.trial_forkserver", "serve", socket_path, str(parent.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        marker = tmp_path / "ran"
        assert run_client(socket_path, ["-c", f"open({str(marker)!r}, 'w')"]) == 1
        assert not marker.exists()
        parent.kill()  # the search process is gone: the server follows
        server.wait(timeout=10)
        assert "refused to run" in server.stderr.read()
    finally:
        parent.kill()
        server.kill()


def test_a_trial_process_that_cannot_load_the_data_stores_why_with_its_trial(tmp_path, db_url):
    """On another machine the data folder may be missing: the trial's row says so, not only NNI's log."""
    import shutil

    from test_search import make_cifar

    from db import open_database
    from effnas.records import TrialRole
    from nas.evaluation.config import RewardConfig
    from nas.evaluation.evaluator import Evaluator
    from nas.search.config import SearchConfig
    from nas.search.study import Study, create_search, train_queued_trial
    from nas.training.config import DataError, TaskConfig
    from nas.training.data import load_task_data

    data_dir = make_cifar(tmp_path / "cifar")
    config = SearchConfig(reward=RewardConfig(target_flops=400_000_000),
                          task=TaskConfig(dataset="cifar10", data_dir=str(data_dir), threads=1))
    db = open_database(db_url)
    search_id = create_search(db, config, None)
    data = load_task_data(config.task, config.proxy.resolution)
    study = Study(db, search_id, config, Evaluator(config.reward, config.proxy, data))
    sample = study.space.b0_sample()
    study.reserve(sample, TrialRole.CANDIDATE)
    assert [r["status"] for r in rows(db_url, search_id)] == ["queued"]
    shutil.rmtree(data_dir)
    with pytest.raises(DataError):
        train_queued_trial(db_url, search_id, sample, "candidate")
    [row] = rows(db_url, search_id)
    assert row["status"] == "failed" and "does not exist" in row["error"]


@pytest.mark.slow
def test_trial_concurrency_from_nni_config_shares_the_cores_like_workers(tmp_path):
    config = tmp_path / "local.yml"
    config.write_text("trialConcurrency: 2\ntrainingService:\n  platform: local\n")
    db = f"sqlite:///{tmp_path / 'n.db'}"
    result = run(search_command(db, "--trials", "1", "--no-reference", "--nni-config", str(config), "--epochs", "1",
                                "--subset", "300"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 at a time in trial processes" in result.stderr
    engine = create_engine(db)
    with engine.connect() as connection:
        stored = connection.execute(text("select config from searches")).scalar_one()
    engine.dispose()
    import json

    assert json.loads(stored)["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert [r["status"] for r in rows(db)] == ["complete"]
