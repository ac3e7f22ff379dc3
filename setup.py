"""The one compiled part of localet: optional C kernels (localet_core/_native.c).

Everything else is in pyproject.toml. Without a C compiler the build skips them (``optional``)
and localet uses scipy's sparse product and numpy's reductions instead (slower; the same
volumes). ``python -c "import localet_core.native as n; print(n.native_available())"`` tells.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "localet_core._native",
            sources=["localet_core/_native.c"],
            define_macros=[("LOCALET_PYTHON_MODULE", "1")],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ],
)
