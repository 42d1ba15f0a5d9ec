"""A small ctypes layer over Linux Landlock (standard library only).

Landlock lets an unprivileged process give up access rights for itself and its future
children, for good: which files and directories it may read, write or execute, which TCP
ports it may bind or connect to, and (ABI 6) whether it may signal processes or reach
abstract UNIX sockets outside its own sandbox. The kernel enforces it; nothing here
filters anything itself::

    ruleset = Ruleset(abi())                 # handles every right this kernel knows
    ruleset.allow("/usr", READ)              # read and execute under /usr
    ruleset.allow("/tmp/scratch", ALL_FS)    # anything under the scratch directory
    ruleset.restrict_self()                  # from here on, nothing else

Rights a kernel does not know (an older ABI) are left out of what is handled: they stay
allowed, and :func:`abi` tells the caller which protections it may count on.
"""

from __future__ import annotations

import ctypes
import os
import struct

# The system calls have the same numbers on every architecture (they came after the
# tables were unified).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, with the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
# Rights that make sense on a file (the others only on a directory).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

# Network rights (ABI 4): no rule for a port means it may be neither bound nor connected to.
BIND_TCP = 1 << 0
CONNECT_TCP = 1 << 1
# Scopes (ABI 6): no signals to, and no abstract UNIX sockets of, processes outside the sandbox.
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

READ = READ_FILE | READ_DIR | EXECUTE
ALL_FS = _FS_BY_ABI[5]


class LandlockError(OSError):
    """Landlock is missing, or refused a rule."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when it has none (or it is disabled)."""
    try:
        version = _libc().syscall(
            _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
        )
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def fs_rights(version: int) -> int:
    """Every filesystem right an ABI knows."""
    return _FS_BY_ABI.get(min(version, 5), 0) if version > 0 else 0


class Ruleset:
    """Rules being gathered; :meth:`restrict_self` applies them to this process."""

    def __init__(self, version: int) -> None:
        if version < 1:
            raise LandlockError(0, "this kernel offers no Landlock")
        self.version = version
        self.handled_fs = fs_rights(version)
        self.handled_net = (BIND_TCP | CONNECT_TCP) if version >= 4 else 0
        self.scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if version >= 6 else 0
        attr = struct.pack("=QQQ", self.handled_fs, self.handled_net, self.scoped)
        libc = _libc()
        fd = libc.syscall(_SYS_CREATE_RULESET, ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self._fd = fd
        self._libc = libc
        self.rules: list[tuple[str, int]] = []

    def allow(self, path: str, rights: int) -> bool:
        """Allow ``rights`` beneath ``path`` (a directory) or on it (a file). A path that
        does not exist is skipped (False)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not os.path.isdir(path):
                rights &= _FILE_RIGHTS
            rights &= self.handled_fs
            if not rights:
                return False
            # struct landlock_path_beneath_attr is packed: u64 allowed_access, s32 parent_fd
            attr = struct.pack("=Qi", rights, fd)
            result = self._libc.syscall(
                _SYS_ADD_RULE,
                ctypes.c_int(self._fd),
                ctypes.c_int(_RULE_PATH_BENEATH),
                ctypes.c_char_p(attr),
                ctypes.c_uint32(0),
            )
            if result < 0:
                err = ctypes.get_errno()
                raise LandlockError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
        finally:
            os.close(fd)
        self.rules.append((path, rights))
        return True

    def restrict_self(self) -> None:
        """Enforce the rules on this process (and every process it starts), for good."""
        libc = self._libc
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        result = libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(self._fd), ctypes.c_uint32(0))
        err = ctypes.get_errno()
        os.close(self._fd)
        if result < 0:
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
