"""A fork server for local trial processes: NNI's trials start in a fraction of a second instead of seconds.

NNI's `local` training service starts every trial as a new Python process, which spends about 3 s of CPU
importing PyTorch, SciPy, pandas, SQLAlchemy and effnas before it trains; on a small machine that eats most of
what running trials in parallel gains. The search process starts this server once: it imports those libraries
(not NNI, which reads its trial's environment when imported, and never touching PyTorch's threads or a GPU) and
then waits on a Unix socket in a private folder. NNI's trial command runs `python -m nas.search.trial_forkserver run
SOCKET -m nni.nas.execution.training_service trial`: that small client hands its environment, working folder
and standard streams to the server, which forks a child that runs NNI's trial entry exactly as the command would
have, and reports the child's exit status back, which the client exits with. When a client goes away (NNI
stopped the trial), its child is killed; when the search process goes away, the server and its children end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# The one command the server runs: NNI's trial entry for its training-service engine.
TRIAL_COMMAND = ["-m", "nni.nas.execution.training_service", "trial"]
_LENGTH = struct.Struct("!Q")


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(size)
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# -- client: what NNI's trial command runs --------------------------------------------------------------------

def run_client(socket_path: str, command: list[str]) -> int:
    """Has the server run `command` with this process's environment, folder and streams; its exit status."""
    request = json.dumps({"command": command, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(socket_path)
        socket.send_fds(connection, [_LENGTH.pack(len(request))], [0, 1, 2])
        connection.sendall(request)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = connection.recv(64)
            if not chunk:
                print("effnas trial fork server went away before the trial ended", file=sys.stderr)
                return 1
            answer += chunk
    return int(answer)


# -- server ---------------------------------------------------------------------------------------------------

def _preload() -> None:
    # Everything a trial imports that does not read the trial's environment at import time. torch._dynamo among
    # them: every optimizer's constructor imports it (add_param_group is wrapped by torch._disable_dynamo), about
    # 2.4 s of each trial's start on 2 cores, paid once here instead.
    import json_tricks  # noqa: F401
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    import db  # noqa: F401
    import nas.search.study  # noqa: F401


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _run_child(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the trial process and never return."""
    import atexit
    import runpy
    import traceback

    code = 1
    try:
        os.setsid()
        connection.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        module = request["command"][1]
        sys.argv = [module, *request["command"][2:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(socket_path: str, parent: int) -> None:
    """Serve trial requests on `socket_path` until process `parent` (the search) is gone or SIGTERM arrives."""
    import selectors

    _preload()
    children: dict[int, socket.socket] = {}  # child pid -> the connection of its client

    def stop(*_: object) -> None:
        for pid in children:
            _kill(pid)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                pid = _start(connection, [listener, *children.values()], selector)
                if pid is not None:
                    children[pid] = connection
                    selector.register(connection, selectors.EVENT_READ, pid)
            elif not key.fileobj.recv(1):  # the client ended: NNI stopped this trial
                _kill(key.data)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = children.pop(pid, None)
            if connection is not None:
                selector.unregister(connection)
                try:
                    connection.sendall(f"{_exit_status(status)}\n".encode())
                except OSError:
                    pass
                connection.close()
        if os.getppid() != parent:
            stop()


def _start(connection: socket.socket, others: list[socket.socket], selector) -> int | None:
    try:
        header, fds, _, _ = socket.recv_fds(connection, _LENGTH.size, 3)
        if len(header) < _LENGTH.size or len(fds) != 3:
            raise ConnectionError("incomplete request")
        request = json.loads(_receive_exactly(connection, _LENGTH.unpack(header)[0]))
        if request["command"] != TRIAL_COMMAND:
            raise ValueError(f"refused to run {request['command']}")
    except (OSError, ValueError, KeyError) as exc:
        print(f"effnas trial fork server: bad request: {exc}", file=sys.stderr, flush=True)
        connection.close()
        return None
    pid = os.fork()
    if pid == 0:
        selector.close()
        for other in others:
            other.close()
        _run_child(connection, request, fds)
    for fd in fds:
        os.close(fd)
    return pid


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "serve":
        serve(argv[1], int(argv[2]))
        return 0
    if len(argv) >= 2 and argv[0] == "run":
        return run_client(argv[1], argv[2:])
    print("usage: python -m nas.trial_forkserver serve SOCKET PARENT_PID | run SOCKET -m MODULE ARGS...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
