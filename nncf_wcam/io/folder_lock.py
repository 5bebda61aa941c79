"""One run at a time per output folder: an advisory lock file that names its holder.

Two `compress` runs writing into one folder would leave a mix (the checkpoint of one, the teacher
of the other). The lock is `fcntl.flock` on `.nncf-wcam.lock` inside the folder: the kernel drops
it when the holder dies, so a lock left by a killed run (kill -9, power loss) is taken over by the
next run, which says so. The file holds the holder's pid, host, start time and command, so that a
refused run can name it.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Optional

from nncf_wcam.errors import NncfWcamError

LOCK_NAME = ".nncf-wcam.lock"


class FolderLockedError(NncfWcamError):
    """Another live process holds the folder's lock."""


MAX_COMMAND_CHARS = 200  # a refusal names the holder's command, shortened: a command line can be 50 kB


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    command = str(holder.get("command"))
    if len(command) > MAX_COMMAND_CHARS:
        command = command[: MAX_COMMAND_CHARS - 3] + "..."
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {command}"


def _open_lock_file(path: Path) -> int:
    """The lock file's descriptor; a symbolic link, a folder or anything but a regular file there is refused
    (opening it would truncate or write through to whatever it names)."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        descriptor = None
    if descriptor is not None and stat.S_ISREG(os.fstat(descriptor).st_mode):
        return descriptor
    if descriptor is not None:
        os.close(descriptor)
    kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
    msg = f"{path} is {kind}: nncf-wcam's lock is a regular file it writes itself, so nothing was opened. Fix: remove {path}."
    raise FolderLockedError(msg)


def _read(descriptor: int) -> dict:
    os.lseek(descriptor, 0, os.SEEK_SET)
    text = os.read(descriptor, 65536).decode("utf-8", "replace")
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


class FolderLock:
    """`with FolderLock(folder):` holds the folder's lock (creating the folder); `taken_over` names a dead holder's lock.

    A folder that the lock created and that is still empty on release is removed again, so that a
    run refused before it wrote anything leaves nothing behind.
    """

    def __init__(self, folder, command: Optional[str] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.taken_over: Optional[str] = None
        self.taken_over_elsewhere = False
        self._descriptor: Optional[int] = None
        self._created = False

    def acquire(self) -> "FolderLock":
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = _open_lock_file(self.path)
            except FolderLockedError:
                self._remove_created_folder()
                raise
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(descriptor)
                os.close(descriptor)
                self._remove_created_folder()
                msg = f"{self.folder} is in use by another nncf-wcam run ({_describe(holder)}). Wait for it to finish, or choose another --output."
                raise FolderLockedError(msg) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(descriptor)  # the previous holder removed the file between our open and flock: try again
        previous = _read(descriptor)
        if previous:  # a holder that exits cleanly removes the file: this one died holding it (or its host released it)
            self.taken_over = _describe(previous)
            self.taken_over_elsewhere = previous.get("host") != socket.gethostname()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,
        }
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, json.dumps(holder).encode("utf-8"))
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        if self._descriptor is None:
            return
        try:
            os.unlink(self.path)  # while still holding it, so that no one locks a file about to vanish
        except FileNotFoundError:
            pass
        os.close(self._descriptor)
        self._descriptor = None
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created:
            try:
                self.folder.rmdir()  # only if empty
            except OSError:
                pass

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_not_locked(folder) -> None:
    """Refuses a folder another live run holds, without creating anything (a holder always has the lock file)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file() or path.is_symlink():
        return
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # gone, or unreadable: the lock itself reports it when it is taken
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(descriptor)
        msg = f"{folder} is in use by another nncf-wcam run ({_describe(holder)}). Wait for it to finish, or choose another --output."
        raise FolderLockedError(msg) from None
    finally:
        os.close(descriptor)
