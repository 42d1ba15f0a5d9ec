"""A small seccomp filter (standard library only): the system calls a contained worker
has no use for, refused by the kernel.

Landlock does not cover UNIX sockets named by a path (a PostgreSQL, Docker or D-Bus
socket), and a user namespace opens kernel interfaces a worker does not need. This
filter makes ``socket()`` fail (EACCES: a worker talks to the server over the pipes it
was started with, which it keeps), ``unshare``/``setns`` and a ``clone`` that asks for a
new namespace fail (EPERM), and ``clone3`` answer ENOSYS (its flags cannot be inspected;
the C library then falls back on ``clone``). Anything else passes::

    deny_for_worker()   # for this process and every one it starts, for good

Only x86_64 and aarch64 are known; elsewhere :func:`supported` is False and nothing is
installed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
# classic BPF
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_ARCH_OFFSET, _NR_OFFSET, _ARG0_OFFSET = 4, 0, 16  # struct seccomp_data (little-endian: arg0's low word)

# (audit arch, {name: number})
_ARCHES = {
    "x86_64": (0xC000003E, {"socket": 41, "clone": 56, "unshare": 272, "setns": 308, "clone3": 435}),
    "aarch64": (0xC00000B7, {"socket": 198, "clone": 220, "unshare": 97, "setns": 268, "clone3": 435}),
}
_X32_BIT = 0x40000000
NAMESPACE_FLAGS = (
    0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME


def supported() -> bool:
    return platform.machine() in _ARCHES


def _program() -> list[tuple[int, int, int, int]]:
    arch, numbers = _ARCHES[platform.machine()]
    deny = _RET_ERRNO | errno.EPERM
    program = [
        (_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),  # another ABI's numbers mean other calls: not let through
        (_LD_W_ABS, 0, 0, _NR_OFFSET),
    ]
    if arch == _ARCHES["x86_64"][0]:
        program += [(_JGE_K, 0, 1, _X32_BIT), (_RET_K, 0, 0, deny)]  # the x32 ABI: not used, not allowed
    rules = [
        ("socket", _RET_ERRNO | errno.EACCES),
        ("unshare", deny),
        ("setns", deny),
        ("clone3", _RET_ERRNO | errno.ENOSYS),
    ]
    for name, answer in rules:
        program += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, answer)]
    program += [
        (_JEQ_K, 0, 3, numbers["clone"]),
        (_LD_W_ABS, 0, 0, _ARG0_OFFSET),
        (_JSET_K, 0, 1, NAMESPACE_FLAGS),
        (_RET_K, 0, 0, deny),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    return program


def deny_for_worker() -> None:
    """Install the filter (raises OSError if the kernel refuses it)."""
    program = _program()
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(len(program), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    for request, args in (
        (_PR_SET_NO_NEW_PRIVS, (1, 0, 0, 0)),
        (_PR_SET_SECCOMP, (_SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)),
    ):
        if libc.prctl(request, *(ctypes.c_ulong(a) for a in args)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl({request}): {os.strerror(err)}")
