"""One run at a time per output folder: an advisory lock file that names its holder.

Two `compress` runs writing into one folder would leave a mix (the checkpoint of one, the teacher
of the other). The lock is `fcntl.flock` on `.nncf-wcam.lock` inside the folder: the kernel drops
it when the holder dies, so a lock left by a killed run (kill -9, power loss) is taken over by the
next run, which says so. The file holds the holder's pid, host, start time and command, so that a
refused run can name it.
"""

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Optional

from nncf_wcam.errors import NncfWcamError

LOCK_NAME = ".nncf-wcam.lock"


class FolderLockedError(NncfWcamError):
    """Another live process holds the folder's lock."""


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"


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
        self._descriptor: Optional[int] = None
        self._created = False

    def acquire(self) -> "FolderLock":
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        if previous:  # a holder that exits cleanly removes the file: this one died holding it
            self.taken_over = _describe(previous)
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
