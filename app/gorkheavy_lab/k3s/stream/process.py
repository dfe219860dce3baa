"""One exec session's process: under a pty (``tty``: the command is a session leader with the pty as its
controlling terminal, as runc sets up an exec with a terminal, so the line discipline edits lines and turns
Ctrl-C into SIGINT for the foreground process group) or on pipes; non-blocking reads and writes on the event
loop, window size by ``TIOCSWINSZ``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import signal
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 32 * 1024
# Linux's ioctls on a pty master (asm-generic numbers, as on amd64 and arm64): unlock the pty, open its peer
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def open_pty(ptmx: Path | None) -> tuple[int, int]:
    """(master, slave): from the given ``ptmx`` (a container's own devpts, as runc allocates an exec's
    terminal inside the container, so ``tty`` names it there) or from the node's."""
    if ptmx is None:
        return pty.openpty()
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return pty.openpty()  # the terminal works all the same; only its name is not the container's
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except BaseException:
        os.close(master)
        raise
    return master, int(slave)


def default_signals() -> None:
    """In a new container process, between fork and exec: every signal back to its default action and none
    blocked, as runc starts a container's processes. A kubelet started from a shell's background job has
    SIGINT and SIGQUIT ignored, and an ignored signal stays ignored across exec: without this, Ctrl-C in
    ``kubectl exec -it`` would not reach the command, nor a SIGINT the container's init."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _terminal_session() -> None:  # runs in the child between fork and exec
    default_signals()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _wait_fd(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def read_fd(fd: int) -> bytes:
    """The next bytes from a non-blocking fd; ``b""`` at its end (EOF, or EIO from a pty whose other side
    every process has closed)."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            await _wait_fd(fd, write=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _wait_fd(fd, write=True)


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


@dataclass
class Session:
    """A running command with its stdio; ``outputs`` are (channel, fd) pairs the caller reads."""

    proc: asyncio.subprocess.Process
    tty: bool
    stdin_fd: int | None  # the pty master (tty) or the write end of the stdin pipe
    outputs: list[tuple[int, int]] = field(default_factory=list)
    _closed: set[int] = field(default_factory=set)

    @classmethod
    async def start(
        cls,
        argv: list[str],
        env: dict[str, str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        ptmx: Path | None = None,
    ) -> Session:
        if tty:
            master, slave = open_pty(ptmx)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_terminal_session,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            return cls(proc, True, master, [(1, master)] if stdout else [])
        fds: list[int] = []
        pipes: dict[str, tuple[int, int]] = {}
        try:
            for name, wanted in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
                if wanted:
                    pipes[name] = os.pipe()
                    fds.extend(pipes[name])
            child = {
                name: pipes[name][0 if name == "stdin" else 1]
                if name in pipes
                else asyncio.subprocess.DEVNULL
                for name in ("stdin", "stdout", "stderr")
            }
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=child["stdin"],
                stdout=child["stdout"],
                stderr=child["stderr"],
                env=env,
                preexec_fn=default_signals,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for name, (r, w) in pipes.items():
            os.close(r if name == "stdin" else w)
        mine = {name: (w if name == "stdin" else r) for name, (r, w) in pipes.items()}
        for fd in mine.values():
            os.set_blocking(fd, False)
        outputs = [(ch, mine[name]) for ch, name in ((1, "stdout"), (2, "stderr")) if name in mine]
        return cls(proc, False, mine.get("stdin"), outputs)

    async def write_stdin(self, data: bytes) -> None:
        if self.stdin_fd is not None and self.stdin_fd not in self._closed:
            try:
                await write_fd(self.stdin_fd, data)
            except (BrokenPipeError, OSError):
                self.close_stdin()

    def close_stdin(self) -> None:
        """The client's stdin ended (v5 close signal). On a pty there is nothing to close: an end of input
        reaches a terminal program only as the EOF character, which the client sends as data."""
        if not self.tty and self.stdin_fd is not None:
            self._close(self.stdin_fd)

    def resize(self, width: int, height: int) -> None:
        if self.tty and self.stdin_fd is not None and self.stdin_fd not in self._closed:
            set_window_size(self.stdin_fd, width, height)

    def _close(self, fd: int) -> None:
        if fd not in self._closed:
            self._closed.add(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def exit_code(self) -> int:
        """The exit status as a container runtime reports it: 128 + the signal for a killed process."""
        code = self.proc.returncode
        assert code is not None
        return 128 - code if code < 0 else code

    async def abandon(self) -> None:
        """The client went away and the command goes on, as with containerd (kubernetes/kubernetes#89031,
        k3s-io/k3s#13749): on pipes its stdin ends and its output goes nowhere (a write gets SIGPIPE); a pty
        stays open, its output read and dropped, until the command ends. Then the fds are closed."""
        if not self.tty:
            self.close()
        else:
            assert self.stdin_fd is not None
            with contextlib.suppress(OSError):
                while await read_fd(self.stdin_fd):
                    pass
        await self.proc.wait()
        self.close()

    def kill(self) -> None:
        """End the command and everything in its session (the kubelet's server stops)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self.tty:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()

    def close(self) -> None:
        for fd in {self.stdin_fd, *(fd for _, fd in self.outputs)} - {None}:
            assert fd is not None
            self._close(fd)
