"""Environment for running Scipion projects in tests: headless, offline, on this checkout.

Call :func:`setup` BEFORE the first ``import pyworkflow`` (pyworkflow reads its configuration at
import). It is not in conftest.py on purpose: the other tests never pay for (or see) it.
What each variable is for: /work/shared/notes/scipion.md.
"""
import atexit
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROOT = None


def setup() -> str:
    """Point Scipion at a fresh temporary folder; return it. Idempotent."""
    global _ROOT
    if _ROOT is not None:
        return _ROOT
    if "pyworkflow" in sys.modules:
        raise RuntimeError("scipion_env.setup() must run before pyworkflow is imported")
    _ROOT = tempfile.mkdtemp(prefix="localet_scipion_")
    atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    hosts = os.path.join(_ROOT, "hosts.conf")
    with open(hosts, "w") as f:
        f.write("[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s\n"
                "NAME = SCIPION_LOCALHOST\nADDRESS = localhost\nMPI_PREFIX =\n")
    # Protocol steps run in child processes: they must import THIS checkout's localet,
    # localet_core and localet_scipion (the editable install may point at another one).
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + path if path else "")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    os.environ.update({
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_HOSTS": hosts,
        "SCIPION_PYTHON": sys.executable,
        "SQLITE_JOURNAL_MODE": "WAL",
        "SCIPION_USER_DATA": os.path.join(_ROOT, "ud"),
        "SCIPION_TESTS": os.path.join(_ROOT, "data"),
        "SCIPION_TEST_NOSYNC": "True",
        "SCIPION_NOTIFY": "False",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    })
    os.makedirs(os.path.join(_ROOT, "data"), exist_ok=True)
    return _ROOT
