"""Scipion plugin for localet: tomogram reconstruction with localized supervised learning.

Scipion finds this package through the ``pyworkflow.plugin`` entry point declared in
``pyproject.toml``. Boxes (protocols) live in :mod:`localet_scipion.protocols`, the trained-model object
in :mod:`localet_scipion.objects`. Nothing here imports torch: each protocol step runs the
``localet`` command line through ``runJob``, possibly inside another environment
(``LOCALET_ENV_ACTIVATION``) or on a cluster node (Scipion's ``hosts.conf`` queues).
"""
import os
import shlex
import sys

import pwem
from pyworkflow.utils import Environ

from localet_core import __version__  # noqa: E402,F401  (torch-free: localet_core imports lazily)
from localet_scipion.constants import LOCALET, LOCALET_CUDA_LIB, LOCALET_ENV_ACTIVATION, LOCALET_PROGRAM

_logo = None
_references = ["kishore2025localized"]


class Plugin(pwem.Plugin):
    _url = "https://github.com/localet/localet"

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(LOCALET_ENV_ACTIVATION, "",
                       description="Shell command activating the environment with localet and "
                                   "torch (e.g. 'conda activate localet'); empty: Scipion's own.")
        cls._defineVar(LOCALET_PROGRAM, "",
                       description="The localet program; empty: 'localet' in the activated "
                                   "environment, else Scipion's python -m localet.")
        cls._defineVar(LOCALET_CUDA_LIB, "",
                       description="CUDA library folder for localet jobs (optional).")

    @classmethod
    def getActivation(cls) -> str:
        return (cls.getVar(LOCALET_ENV_ACTIVATION) or "").strip()

    @classmethod
    def getProgram(cls) -> str:
        """The command that starts the localet CLI, activation included (for ``runJob``)."""
        program = (cls.getVar(LOCALET_PROGRAM) or "").strip()
        activation = cls.getActivation()
        if not program:
            program = LOCALET if activation else f"{shlex.quote(sys.executable)} -m {LOCALET}"
        if activation:
            conda = cls.getCondaActivationCmd() if activation.startswith("conda ") else ""
            return f"{conda}{activation} && {program}"
        return program

    @classmethod
    def getEnviron(cls) -> Environ:
        """Environment of localet jobs: Scipion's, minus its PYTHONPATH when localet lives in
        another environment (that env's packages must win), plus an optional CUDA lib."""
        environ = Environ(os.environ)
        if cls.getActivation() and "PYTHONPATH" in environ:
            del environ["PYTHONPATH"]
        cuda = (cls.getVar(LOCALET_CUDA_LIB) or "").strip()
        if cuda:
            environ.addLibrary(cuda)
        return environ

    @classmethod
    def runLocalet(cls, protocol, command: str, args: str, cwd=None):
        """Run ``localet COMMAND ARGS`` as a logged job of ``protocol`` (queue-aware)."""
        protocol.info(f"localet plugin at {os.path.dirname(os.path.abspath(__file__))}")
        protocol.runJob(f"{cls.getProgram()} {command}", args, env=cls.getEnviron(), cwd=cwd,
                        numberOfMpi=1)

    @classmethod
    def defineBinaries(cls, env):
        # localet is a pip package (it ships this plugin); nothing to build. Users who want torch
        # in its own environment set LOCALET_ENV_ACTIVATION instead (see docs/scipion.md).
        pass
