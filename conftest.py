"""pytest configuration of the repository (tests/ and localet_scipion/tests/).

The plugin's Scipion tests need their environment (``localet_scipion/tests/scipion_env.py``) in
``os.environ`` before pyworkflow is first imported, and importing any ``localet_scipion`` module
imports pyworkflow. So the environment is set up here, from the file's path, just before pytest
collects the first file under ``localet_scipion/tests/``: a run of ``tests/`` alone never sees it.
Those tests get the ``scipion`` marker, and are left out when the ``scipion`` extra
(scipion-pyworkflow, scipion-em, scipion-em-tomo) is not installed.
"""
import importlib.util
import os
import sys

import pytest

_SCIPION_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "localet_scipion", "tests")
_SCIPION_PACKAGES = ("pyworkflow", "pwem", "tomo")


def _in_scipion_tests(path) -> bool:
    return str(path) == _SCIPION_TESTS or str(path).startswith(_SCIPION_TESTS + os.sep)


def _missing_scipion() -> list:
    return [name for name in _SCIPION_PACKAGES if importlib.util.find_spec(name) is None]


def _setup_scipion_environment() -> None:
    spec = importlib.util.spec_from_file_location("_localet_scipion_env",
                                                  os.path.join(_SCIPION_TESTS, "scipion_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.setup()


def pytest_report_header(config):
    missing = _missing_scipion()
    if missing:
        return f"localet_scipion/tests: left out ({', '.join(missing)} not installed: the scipion extra)"
    return None


def pytest_ignore_collect(collection_path, config):
    if _in_scipion_tests(collection_path) and _missing_scipion():
        return True
    return None


def pytest_collect_file(file_path, parent):
    if "pyworkflow" not in sys.modules and _in_scipion_tests(file_path):
        _setup_scipion_environment()
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _in_scipion_tests(item.path):
            item.add_marker(pytest.mark.scipion)
