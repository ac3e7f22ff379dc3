"""SerialEM tilt-series metadata (``.mdoc``).

An mdoc file is a list of ``Key = value`` lines. Lines before the first section describe the
whole stack (``PixelSpacing``, ``Voltage``, ...); ``[T = text]`` lines are free-text titles,
one of which usually reads ``Tilt axis angle = 85.3, binning = 1 ...``; each
``[ZValue = k]`` section describes view k of the stack (0-based), with ``TiltAngle``,
``ExposureDose`` (electrons per square Angstrom for that view) and ``DateTime`` among others.
Sections are usually, but not necessarily, in Z order, and Z order (stack order) is not
acquisition order (e.g. dose-symmetric schemes): the acquisition order is taken from
``DateTime``.
"""
from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from localet_core.errors import InputError, PathLike
from localet_core.io.files import check_readable_file

__all__ = ["MdocInfo", "read_mdoc"]

# Month names as SerialEM writes them; parsed by hand so the result does not depend on the
# locale (strptime's %b does).
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    start=1)}
_DATETIME = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{2}|\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})$")
_SECTION = re.compile(r"^\[\s*([^=\]]+?)\s*=\s*(.*?)\s*\]$")
_TILT_AXIS_TITLE = re.compile(r"tilt\s*axis\s*angle\s*=\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)",
                              re.IGNORECASE)


@dataclass
class MdocInfo:
    """Per-view and per-stack metadata of a SerialEM tilt series.

    All per-view arrays have shape (n_views,) and are in stack order (sorted by ZValue).

    Attributes:
        path: the .mdoc file.
        angles: float64, tilt angles in degrees (``TiltAngle``).
        dose: float64, electrons per square Angstrom received by each view (``ExposureDose``;
            0 where absent).
        acquisition_order: int64, 0-based rank of each view in acquisition (by ``DateTime``
            when every view has one, ties broken by ZValue; otherwise by ZValue).
        prior_dose: float64, e/A^2 received by the specimen before each view was acquired (sum
            of the doses of the views acquired earlier).
        z_values: int64, the ``ZValue`` of each view (0..n_views-1).
        pixel_size: Angstrom per pixel (``PixelSpacing``), or None.
        tilt_axis_angle: degrees, from the ``Tilt axis angle = X`` title or a ``TiltAxisAngle``
            key, or None.
        voltage: kV (``Voltage``), or None.
        datetimes: acquisition time of each view, or None where absent.
    """

    path: Path
    angles: np.ndarray
    dose: np.ndarray
    acquisition_order: np.ndarray
    prior_dose: np.ndarray
    z_values: np.ndarray
    pixel_size: Optional[float] = None
    tilt_axis_angle: Optional[float] = None
    voltage: Optional[float] = None
    datetimes: List[Optional[datetime.datetime]] = field(default_factory=list)

    @property
    def n_views(self) -> int:
        """Number of views described."""
        return int(self.angles.shape[0])


@dataclass
class _Entry:
    """One ``Key = value`` with the line it came from (for error messages)."""

    value: str
    line_no: int


@dataclass
class _Section:
    """The keys of one ``[ZValue = k]`` section, or of the header (z = None)."""

    z: Optional[int]
    line_no: int
    keys: Dict[str, _Entry] = field(default_factory=dict)


def _number(path: Path, entry: _Entry, key: str) -> float:
    """The first number of a value such as ``TiltAngle = -3.0012`` or ``PixelSpacing = 1 1``."""
    tokens = entry.value.split()
    try:
        value = float(tokens[0])
    except (IndexError, ValueError):
        raise InputError(path, f"line {entry.line_no}: {key} value {entry.value!r} "
                               "is not a number") from None
    if not math.isfinite(value):
        raise InputError(path, f"line {entry.line_no}: {key} value {entry.value!r} "
                               "is not a finite number")
    return value


def _parse_datetime(path: Path, entry: _Entry) -> datetime.datetime:
    """``24-Nov-26  10:15:02`` (two-digit years are 20xx, as SerialEM means them)."""
    match = _DATETIME.match(entry.value.strip())
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        raise InputError(path, f"line {entry.line_no}: DateTime {entry.value!r} is not like "
                               "'24-Nov-26  10:15:02'")
    day, _, year, hour, minute, second = match.groups()
    year_n = int(year) + (2000 if len(year) == 2 else 0)
    try:
        return datetime.datetime(year_n, month, int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise InputError(path, f"line {entry.line_no}: DateTime {entry.value!r}: {exc}") from None


def _split_sections(path: Path, lines: List[str]) -> Tuple[_Section, List[_Section], List[str]]:
    """Group lines into the header, the ZValue sections and the title texts.

    Keys in other sections (e.g. ``[FrameSet = 0]``, ``[MontSection = 0]``) are skipped: they
    do not describe stack views.
    """
    header = _Section(z=None, line_no=0)
    views: List[_Section] = []
    titles: List[str] = []
    current: Optional[_Section] = header
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                raise InputError(path, f"line {line_no}: malformed section line {line!r} "
                                       "(expected '[Key = value]')")
            name, value = match.group(1), match.group(2)
            if name == "T":
                titles.append(value)
                continue  # titles do not end the header
            if name == "ZValue":
                try:
                    z = int(value)
                except ValueError:
                    raise InputError(path, f"line {line_no}: ZValue {value!r} is not an "
                                           "integer") from None
                if z < 0:
                    raise InputError(path, f"line {line_no}: ZValue {z} is negative")
                current = _Section(z=z, line_no=line_no)
                views.append(current)
            else:
                current = None  # a section we do not use
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise InputError(path, f"line {line_no}: expected 'Key = value', got {line!r}")
        if current is not None:
            current.keys[key] = _Entry(value.strip(), line_no)
    return header, views, titles


def _tilt_axis(path: Path, header: _Section, titles: List[str],
               views: List[_Section]) -> Optional[float]:
    """Tilt axis angle in degrees: a ``TiltAxisAngle`` key wins over the title text."""
    for section in [header] + views:
        if "TiltAxisAngle" in section.keys:
            return _number(path, section.keys["TiltAxisAngle"], "TiltAxisAngle")
    for title in titles:
        match = _TILT_AXIS_TITLE.search(title)
        if match:
            value = float(match.group(1))
            if math.isfinite(value):
                return value
    return None


def _optional_number(path: Path, sections: List[_Section], key: str) -> Optional[float]:
    """The first section (in the given order) that has ``key`` gives its value."""
    for section in sections:
        if key in section.keys:
            return _number(path, section.keys[key], key)
    return None


def _acquisition_ranks(z_values: np.ndarray,
                       times: List[Optional[datetime.datetime]]) -> np.ndarray:
    """0-based acquisition rank of each view: by time (ties by Z) if all have one, else Z."""
    if times and all(t is not None for t in times):
        keys = sorted(range(len(times)), key=lambda i: (times[i], z_values[i]))
    else:
        keys = sorted(range(len(z_values)), key=lambda i: z_values[i])
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[np.array(keys, dtype=np.int64)] = np.arange(len(keys))
    return ranks


def read_mdoc(path: PathLike) -> MdocInfo:
    """Read a SerialEM tilt-series ``.mdoc``.

    Returns:
        :class:`MdocInfo`, per-view arrays in stack order (by ZValue).

    Raises:
        InputError: missing or binary file, malformed lines (with line numbers), no
            ``[ZValue = k]`` sections, duplicate or missing ZValues (they must be 0..n-1 so
            that they match the stack), a view without ``TiltAngle``, non-numeric values, a
            negative dose, an unreadable ``DateTime``.
    """
    p = Path(os.fspath(path)).expanduser()
    check_readable_file(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror})") from None
    if b"\x00" in raw:
        raise InputError(p, "is not a text file")
    # Titles are free text typed on Windows machines: never fail on their encoding.
    lines = raw.decode("utf-8", errors="replace").splitlines()

    header, views, titles = _split_sections(p, lines)
    if not views:
        raise InputError(p, "has no [ZValue = ...] sections, so it describes no views")
    views.sort(key=lambda s: s.z)  # type: ignore[arg-type, return-value]
    z_values = np.array([s.z for s in views], dtype=np.int64)
    _check_z_values(p, views, z_values)

    angles = np.empty(len(views), dtype=np.float64)
    dose = np.zeros(len(views), dtype=np.float64)
    times: List[Optional[datetime.datetime]] = []
    for i, section in enumerate(views):
        if "TiltAngle" not in section.keys:
            raise InputError(p, f"line {section.line_no}: [ZValue = {section.z}] has no "
                                "TiltAngle")
        angles[i] = _number(p, section.keys["TiltAngle"], "TiltAngle")
        if "ExposureDose" in section.keys:
            dose[i] = _number(p, section.keys["ExposureDose"], "ExposureDose")
            if dose[i] < 0:
                entry = section.keys["ExposureDose"]
                raise InputError(p, f"line {entry.line_no}: ExposureDose {entry.value} "
                                    "is negative")
        entry = section.keys.get("DateTime")
        times.append(_parse_datetime(p, entry) if entry is not None else None)

    order = _acquisition_ranks(z_values, times)
    prior = np.empty_like(dose)
    by_time = np.argsort(order)  # view indices in acquisition order
    prior[by_time] = np.cumsum(dose[by_time]) - dose[by_time]

    return MdocInfo(
        path=p, angles=angles, dose=dose, acquisition_order=order, prior_dose=prior,
        z_values=z_values,
        # The header's value is the stack's; a view's value is only a fallback.
        pixel_size=_positive_or_none(_optional_number(p, [header] + views, "PixelSpacing")),
        tilt_axis_angle=_tilt_axis(p, header, titles, views),
        voltage=_positive_or_none(_optional_number(p, [header] + views, "Voltage")),
        datetimes=times,
    )


def _check_z_values(path: Path, views: List[_Section], z_values: np.ndarray) -> None:
    """ZValues must be 0..n-1, each once, or they cannot be matched to stack views."""
    duplicates = np.flatnonzero(np.diff(z_values) == 0)
    if duplicates.size:
        section = views[int(duplicates[0]) + 1]
        raise InputError(path, f"line {section.line_no}: ZValue {section.z} appears twice")
    expected = np.arange(len(views))
    if not np.array_equal(z_values, expected):
        missing = sorted(set(expected.tolist()) - set(z_values.tolist()))
        raise InputError(path, f"ZValues must run 0..{len(views) - 1} to match the stack; "
                               f"ZValue {missing[0]} is missing")


def _positive_or_none(value: Optional[float]) -> Optional[float]:
    """SerialEM writes 0 for unknown values: treat zero or negative as absent."""
    return value if value is not None and value > 0 else None
