"""Fault injection for tests/test_cli_hostile.py: put this folder first on PYTHONPATH of a
`python -m localet ...` child and set LOCALET_TEST_ENOSPC=NAME[,NAME...]: every fsync of a file
whose name contains one of the NAMEs fails with ENOSPC, as on a full disk (where fsync is the
call that reports it on delayed-allocation and network file systems)."""
import errno
import os

_NAMES = [n for n in os.environ.get("LOCALET_TEST_ENOSPC", "").split(",") if n]
if _NAMES:
    _fsync = os.fsync

    def _full_disk_fsync(fd):
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{int(fd if isinstance(fd, int) else fd.fileno())}"))
        except OSError:
            name = ""
        if any(n in name for n in _NAMES):
            raise OSError(errno.ENOSPC, "No space left on device")
        return _fsync(fd)

    os.fsync = _full_disk_fsync
