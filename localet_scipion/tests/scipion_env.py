"""Environment for running the plugin's Scipion tests: headless, offline, on this checkout.

pyworkflow reads its configuration when it is first imported, and importing any module of
``localet_scipion`` imports it (the package defines the Scipion ``Plugin``). So :func:`setup`
must run before that, from outside the package:

- pytest: the repository's ``conftest.py`` loads this file by its path and calls :func:`setup`
  just before it collects the first file of ``localet_scipion/tests/``;
- ``docs/scipion/make_screenshots.py`` loads it the same way;
- Scipion's own runner (``scipion3 tests localet_scipion.tests.test_protocols``) has configured
  pyworkflow already: :func:`setup` then changes nothing and only provides a scratch folder.

Only the standard library is used here, so the file can be loaded on its own. What each
variable is for: ``/work/shared/notes/scipion.md``.
"""
import atexit
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: environment variable holding the scratch folder of this test session (shared with the
#: protocols' child processes and with a second copy of this module)
ROOT_VARIABLE = "LOCALET_SCIPION_TEST_ROOT"


def _scratch() -> str:
    root = tempfile.mkdtemp(prefix="localet_scipion_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ[ROOT_VARIABLE] = root
    return root


def setup() -> str:
    """Point Scipion at a fresh temporary folder (headless, offline, one host, this checkout's
    packages in the protocols' child processes) and return the folder; idempotent.

    When pyworkflow is already imported with a domain (Scipion's test runner), Scipion's own
    configuration is kept and only a scratch folder is made. Raises RuntimeError when pyworkflow
    was imported without one: it would run with a configuration no test can use.
    """
    root = os.environ.get(ROOT_VARIABLE)
    if root and os.path.isdir(root):
        return root
    if "pyworkflow" in sys.modules:
        if os.environ.get("SCIPION_DOMAIN"):
            return _scratch()
        raise RuntimeError("pyworkflow was imported before localet_scipion/tests/scipion_env.py "
                           "setup(): run these tests with pytest (the repository's conftest.py "
                           "sets the environment up) or with `scipion3 tests`")
    root = _scratch()
    hosts = os.path.join(root, "hosts.conf")
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
        "SCIPION_USER_DATA": os.path.join(root, "ud"),
        "SCIPION_TESTS": os.path.join(root, "data"),
        "SCIPION_TEST_NOSYNC": "True",
        "SCIPION_NOTIFY": "False",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    })
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    return root

