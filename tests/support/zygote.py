"""Start ``creator-monitor`` processes for the tests by forking a preloaded interpreter (a
fork server, as ``multiprocessing``'s ``forkserver`` does), instead of a new interpreter that
imports the whole package again.

Importing what ``creator-monitor run`` needs (SQLAlchemy, pydantic, httpx, APScheduler and the
package itself) costs about 1.5 s of CPU per process on our 2-core machines; the suite starts
about a hundred daemons, most of its subprocess CPU. Each test process keeps one zygote: a
Python process that imported all of that once and waits on a Unix socket. :func:`spawn` sends
it the argv, environment, working folder and the three standard streams (as file descriptors,
``SCM_RIGHTS``); it forks, and the child becomes the command: ``creator-monitor ARGS``
(``monitor.cli.main.main``), ``python -m monitor ARGS``, or ``python -c CODE ARGS``.

The child is a real process of its own, as the console script would be: its own pid (signals,
SIGKILL, ``/proc``), the streams it was given, the environment set before the command reads
it, Python's default signal dispositions, and a normal interpreter exit (atexit, logging's
flush, non-daemon threads joined). Only the imports are shared. The zygote reports the exit
status over the socket, since it, not the test process, is the parent.

What still runs as a new interpreter: anything else (:func:`spawn` falls back to
``asyncio.create_subprocess_exec``), the wheel's console script (``support.wheel``: what a user
installs), and a run with ``CM_TEST_NO_ZYGOTE=1``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: what a zygote imports before it serves (each one that fails to import is skipped)
PRELOAD = (
    "monitor.cli.main",
    "monitor.cli.commands",
    "monitor.daemon",
    "monitor.app.running",
    "monitor.store",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "apprise",
)
#: ``python -c CODE`` programs that may run in a forked zygote: code that patches the package
#: after importing it (``support.tuned``). Others may need a fresh interpreter, so they get one.
FORKABLE_CODE: set[str] = set()
#: called with each process the zygote forks (conftest.py counts the processes a test starts)
ON_SPAWN: list[Callable[[], None]] = []
#: the size of a request's header: the length of the JSON that follows
_HEADER = 8
_TESTS = Path(__file__).resolve().parent.parent


class _Become(Exception):  # not an error: the forked child leaving the serve loop
    """Raised in a forked child: unwinds the zygote's loop, then runs the command."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.argv = argv


# ------------------------------------------------------------------ the zygote's side


def serve(path: str) -> None:  # pragma: no cover - runs in the zygote process
    """Preload, then fork a child per request on the Unix socket ``path``; exits when the test
    process closes our stdin (it ended)."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if threading.active_count() != 1:  # a fork with threads running is unsafe: refuse
        sys.stdout.write("threads\n")
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while True:
            try:
                ready, _, _ = select.select([listener, wake_r, 0], [], [])
            except InterruptedError:
                ready = [wake_r]
            if 0 in ready and not os.read(0, 1):
                return  # the test process ended
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                _reap(children)
            if listener in ready:
                conn, _ = listener.accept()
                forked = _fork(conn, [listener, wake_r, wake_w, *children.values()])
                if isinstance(forked, list):
                    raise _Become(forked)
                children[forked] = conn
            _reap(children)
    finally:
        listener.close()


def _reap(children: dict[int, socket.socket]) -> None:  # pragma: no cover - zygote
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _fork(conn: socket.socket, inherited: list[Any]) -> int | list[str]:  # pragma: no cover
    """Read one request and fork: in the zygote, send the child's pid back and return it; in
    the child, set it up and return its argv."""
    header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER, 3)
    size = int(header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the request was cut short")
        body += chunk
    request = json.loads(body)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        return pid
    # the child: the command's streams, folder and environment; the zygote's handlers and
    # sockets go
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for thing in inherited:
        with contextlib.suppress(OSError):
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    conn.close()
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    with contextlib.suppress(AttributeError):
        import time

        time.tzset()
    return list(request["argv"])


def become(argv: list[str]) -> int:  # pragma: no cover - runs in the forked child
    """Run the command ``argv`` names in this (forked) process; its exit code."""
    mode, rest = argv[0], argv[1:]
    if mode == "-c":
        sys.argv = ["-c", *rest[1:]]
        code = compile(rest[0], "<string>", "exec")
        exec(code, {"__name__": "__main__"})  # boot code registered in FORKABLE_CODE only
        return 0
    from monitor.cli.main import main

    sys.argv = ["creator-monitor", *rest]
    return main(rest)


def zygote_main(path: str) -> None:  # pragma: no cover - the zygote process's entry point
    try:
        serve(path)
    except _Become as child:
        sys.exit(become(child.argv))


# ------------------------------------------------------------------ the test process's side


class _Zygote:
    """This test process's zygote, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._path: str | None = None
        self._folders: list[str] = []
        self._broken = False

    def path(self) -> str | None:
        with self._lock:
            if self._broken:
                return None
            if self._process is None or self._process.poll() is not None:
                self._start()
            return self._path

    def _start(self) -> None:
        if not self._folders:
            atexit.register(self.close)
        folder = tempfile.mkdtemp(prefix="cm-zygote-")
        self._folders.append(folder)
        path = os.path.join(folder, "sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTHONUNBUFFERED"] = "1"
        boot = (
            f"import sys; sys.path.insert(0, {str(_TESTS)!r}); "
            f"from support.zygote import zygote_main; zygote_main({path!r})"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert process.stdout is not None
        said = process.stdout.readline().strip()
        if said != b"ready":
            process.kill()
            process.wait()
            self._broken = True
            return
        self._process, self._path = process, path

    def close(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)


_ZYGOTE = _Zygote()


def _command(argv: list[str]) -> list[str] | None:
    """The command as the zygote runs it, or None when it is not one of ours."""
    if os.environ.get("CM_TEST_NO_ZYGOTE"):
        return None
    program = argv[0]
    if program == sys.executable and argv[1:3] == ["-m", "monitor"]:
        return ["creator-monitor", *argv[3:]]
    if program == sys.executable and len(argv) > 2 and argv[1] == "-c" and argv[2] in FORKABLE_CODE:
        return ["-c", *argv[2:]]
    if program == str(Path(sys.executable).parent / "creator-monitor"):
        return ["creator-monitor", *argv[1:]]
    return None


def _fd(stream: int | IO[Any] | None, default: int, opened: list[int]) -> int:
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        opened.append(fd)
        return fd
    if isinstance(stream, int):
        return stream
    return stream.fileno()


async def _pipe(opened: list[int]) -> tuple[int, asyncio.StreamReader]:
    """A pipe for a child's output: the end to give it, and a reader on ours."""
    ours, theirs = os.pipe()
    opened.append(theirs)
    reader = asyncio.StreamReader(limit=2**20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ours, "rb", 0)
    )
    return theirs, reader


class Forked:
    """A process the zygote forked: the parts of ``asyncio.subprocess.Process`` the tests use."""

    def __init__(
        self,
        pid: int,
        conn: socket.socket,
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
    ) -> None:
        self.pid = pid
        self.stdin = None
        self.stdout, self.stderr = stdout, stderr
        self._conn = conn
        self._said = b""
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        """The exit code (minus the signal that killed it), once the zygote has told it."""
        if self._code is None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self._heard(self._conn.recv(64))
        return self._code

    def _heard(self, chunk: bytes) -> None:
        if not chunk:
            raise ChildProcessError(f"the zygote lost process {self.pid}")
        self._said += chunk
        if self._said.endswith(b"\n"):
            self._code = int(self._said)
            self._conn.close()

    async def communicate(self) -> tuple[bytes | None, bytes | None]:
        """Read the piped streams to their end, then wait (``Process.communicate``)."""

        async def whole(reader: asyncio.StreamReader | None) -> bytes | None:
            return None if reader is None else await reader.read()

        out, err = await asyncio.gather(whole(self.stdout), whole(self.stderr))
        await self.wait()
        return out, err

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        while self.returncode is None:
            self._heard(await loop.sock_recv(self._conn, 64))
        assert self._code is not None
        return self._code

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


#: what :func:`spawn` returns
Child = Forked | asyncio.subprocess.Process


async def spawn(
    *argv: str | os.PathLike[str],
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    start_new_session: bool = False,
) -> Child:
    """``asyncio.create_subprocess_exec(*argv, ...)``, forked from the zygote when ``argv``
    is ``creator-monitor``, ``python -m monitor`` or ``python -c`` (see the module's notes)."""
    words = [os.fspath(a) for a in argv]
    command = _command(words)
    path = None if command is None else await asyncio.to_thread(_ZYGOTE.path)
    if command is None or path is None or stdin == subprocess.PIPE:
        return await asyncio.create_subprocess_exec(
            *words, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
            start_new_session=start_new_session,
        )  # fmt: skip
    opened: list[int] = []
    try:
        out = err = None
        if stdout == subprocess.PIPE:
            out_fd, out = await _pipe(opened)
        else:
            out_fd = _fd(stdout, 1, opened)
        if stderr == subprocess.PIPE:
            err_fd, err = await _pipe(opened)
        elif stderr == subprocess.STDOUT:
            err_fd = out_fd
        else:
            err_fd = _fd(stderr, 2, opened)
        fds = [_fd(stdin, 0, opened), out_fd, err_fd]
        request = json.dumps(
            {
                "argv": command,
                "env": dict(os.environ if env is None else env),
                "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
                "new_session": start_new_session,
            }
        ).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            socket.send_fds(conn, [f"{len(request):0{_HEADER}d}".encode()], fds)
            conn.sendall(request)
            said = b""
            while not said.endswith(b"\n"):
                chunk = conn.recv(64)
                if not chunk:
                    raise ChildProcessError("the zygote did not fork")
                said += chunk
        except BaseException:
            conn.close()
            raise
    finally:
        for fd in opened:
            os.close(fd)
    conn.setblocking(False)
    for counted in ON_SPAWN:
        counted()
    return Forked(int(said), conn, out, err)
