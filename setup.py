"""localet: localized supervised learning for cryo-ET reconstruction."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="localet",
    version="0.1.0",
    description="Cryo-ET tomogram reconstruction with localized supervised learning, "
    "IMOD-compatible, with a Scipion plugin.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.9",
    packages=find_packages(include=["localet", "localet.*", "localet_core", "localet_core.*",
                                    "localet_scipion", "localet_scipion.*"]),
    include_package_data=True,
    package_data={"localet_core": ["data/*", "data/**/*"], "localet_scipion": ["*.conf"]},
    install_requires=[
        # a range, not a pin: 2.13.0 is what the Makefile installs from a local CPU wheel
        "torch>=2.1",
        "numpy>=1.24",
        "mrcfile>=1.4",
        "starfile>=0.5",
        "click>=8.0",
        "tqdm>=4.60",
        "psutil>=5.8",
        "safetensors>=0.4",
        "matplotlib>=3.5",
    ],
    extras_require={
        "scipion": ["scipion-pyworkflow>=3.11", "scipion-em>=3.11", "scipion-em-tomo>=3.12"],
        # teamtomo's FSC is an independent reference in tests (Python >= 3.11 only)
        "test": ["pytest>=7", "scikit-image>=0.21",
                 "torch-fourier-shell-correlation; python_version>='3.11'"],
    },
    entry_points={
        "console_scripts": ["localet = localet.cli:main"],
        "pyworkflow.plugin": ["localet_scipion = localet_scipion"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
