"""Box 'localet - import tilt series (IMOD folder)': stacks with their .tlt, and, when present,
.xf alignments, odd/even half stacks and excluded views."""
import glob
import os
import re

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import Transform
from pwem.protocols import EMProtocol
from pyworkflow.utils import createAbsLink
from tomo.objects import SetOfTiltSeries, TiltImage, TiltSeries, TomoAcquisition
from tomo.protocols import ProtTomoBase

from localet_scipion import convert
from localet_scipion.constants import EVEN, ODD, OUTPUT_TILT_SERIES

_HALF = re.compile(r"_(odd|even|ODD|EVEN)$")


def _parseExcluded(text):
    """'TS_01: 1,41; TS_02: 3-4' -> {'TS_01': [1, 41], 'TS_02': [3, 4]} (1-based views)."""
    from localet_core.io import parse_view_list

    out = {}
    for part in re.split(r"[;\n]", text or ""):
        if not part.strip():
            continue
        if ":" not in part:
            raise ValueError(f"'{part.strip()}' should read TSID: VIEWS, e.g. TS_01: 1,41")
        tsId, views = part.split(":", 1)
        out[tsId.strip()] = sorted(set(parse_view_list(views.strip(), "excluded views")))
    return out


class ProtLocaletImportTs(EMProtocol, ProtTomoBase):
    """Import tilt series from an IMOD-style folder.

    For each stack matching the pattern (e.g. TS_01.st), reads the tilt angles from the file with
    the same name and extension .tlt (or .rawtlt), and attaches when present: the alignment
    TS_01.xf (IMOD's transforms, not applied to the stack), the half stacks TS_01_odd.st and
    TS_01_even.st, and the excluded views you list. tomo's own import cannot attach these.
    """

    _label = "import tilt series (IMOD folder)"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_TILT_SERIES: SetOfTiltSeries}

    def _defineParams(self, form):
        form.addSection(label="Import")
        form.addParam("filesPath", params.PathParam, important=True, label="Folder",
                      help="Folder holding the stacks, .tlt files, .xf files and half stacks.")
        form.addParam("filesPattern", params.StringParam, default="*.st", label="Stack pattern",
                      help="Glob pattern of the stacks in the folder; the tilt-series id is the "
                           "file name without its extension. Half stacks (NAME_odd.st, "
                           "NAME_even.st) are never imported as tilt series of their own.")
        form.addParam("useXf", params.BooleanParam, default=True, label="Read .xf alignments?",
                      help="Attach NAME.xf (IMOD's transforms) to the tilt images when found.")
        form.addParam("interpolated", params.BooleanParam, default=False,
                      label="Stacks already aligned (.ali)?",
                      help="Yes when the stacks were interpolated with the alignment (IMOD .ali): "
                           "no .xf is read then.")
        form.addParam("excludedViews", params.TextParam, default="", label="Excluded views",
                      help="Views to leave out, 1-based in stack order like IMOD's EXCLUDELIST, "
                           "per tilt series: 'TS_01: 1,41; TS_02: 3-4'. They are imported as "
                           "disabled tilt images.")
        group = form.addGroup("Acquisition")
        group.addParam("samplingRate", params.FloatParam, default=0.0,
                       label="Pixel size (A)", help="0: read it from the stack header.")
        group.addParam("voltage", params.FloatParam, default=300.0, label="Voltage (kV)")
        group.addParam("sphericalAberration", params.FloatParam, default=2.7, label="Cs (mm)")
        group.addParam("amplitudeContrast", params.FloatParam, default=0.1, label="Amplitude contrast")
        group.addParam("tiltAxisAngle", params.FloatParam, default=0.0, label="Tilt axis angle (deg)",
                       help="Angle of the tilt axis from the Y axis of the raw images, as in the "
                            "mdoc (IMOD's .xf already includes it).")
        group.addParam("dosePerTilt", params.FloatParam, default=0.0, label="Dose per tilt (e/A^2)")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, needsGPU=False)

    # -------------------------------------------------------------------------- helpers
    def _stacks(self):
        folder = os.path.abspath(self.filesPath.get())
        stacks = sorted(glob.glob(os.path.join(folder, self.filesPattern.get())))
        return [s for s in stacks if not _HALF.search(os.path.splitext(os.path.basename(s))[0])]

    @staticmethod
    def _companion(stack, ext):
        root = os.path.splitext(stack)[0]
        return root + ext if os.path.exists(root + ext) else None

    @staticmethod
    def _half(stack, half):
        root, ext = os.path.splitext(stack)
        for name in (half, half.upper()):
            if os.path.exists(f"{root}_{name}{ext}"):
                return f"{root}_{name}{ext}"
        return None

    def _link(self, path):
        dest = self._getExtraPath(os.path.basename(path))
        createAbsLink(os.path.abspath(path), dest)
        return dest

    # -------------------------------------------------------------------------- step
    def importStep(self):
        from localet_core.io import read_tlt, read_xf

        excluded = _parseExcluded(self.excludedViews.get())
        outSet = self._createSetOfTiltSeries()
        acq = TomoAcquisition(voltage=self.voltage.get(),
                              sphericalAberration=self.sphericalAberration.get(),
                              amplitudeContrast=self.amplitudeContrast.get(), magnification=50000)
        acq.setTiltAxisAngle(self.tiltAxisAngle.get())
        acq.setDosePerFrame(self.dosePerTilt.get())
        outSet.setAcquisition(acq)
        sampling = None
        for stackPath in self._stacks():
            tsId = os.path.splitext(os.path.basename(stackPath))[0]
            tltPath = self._companion(stackPath, ".tlt") or self._companion(stackPath, ".rawtlt")
            if tltPath is None:
                raise ValueError(f"{stackPath}: no {tsId}.tlt next to it")
            angles = read_tlt(tltPath)
            nViews = convert.stackViews(stackPath)
            if nViews != len(angles):
                raise ValueError(f"{stackPath} has {nViews} images but {tltPath} {len(angles)} angles")
            xf = None
            if self.useXf.get() and not self.interpolated.get():
                xfPath = self._companion(stackPath, ".xf")
                xf = read_xf(xfPath) if xfPath else None
                if xf is not None and len(xf) != nViews:
                    raise ValueError(f"{xfPath} has {len(xf)} transforms for {nViews} images")
            odd, even = self._half(stackPath, ODD), self._half(stackPath, EVEN)
            halves = [self._link(odd), self._link(even)] if odd and even else []
            tsSampling = self.samplingRate.get() or convert.stackPixelSize(stackPath)
            if not tsSampling:
                raise ValueError(f"{stackPath} has no pixel size in its header: give one")
            sampling = sampling or tsSampling
            stack = self._link(stackPath)

            ts = TiltSeries(tsId=tsId)
            ts.setSamplingRate(tsSampling)
            ts.setInterpolated(bool(self.interpolated.get()))
            tsAcq = acq.clone()
            tsAcq.setAngleMin(float(np.min(angles)))
            tsAcq.setAngleMax(float(np.max(angles)))
            if len(angles) > 1:
                tsAcq.setStep(float(np.round(np.mean(np.abs(np.diff(np.sort(angles)))), 2)))
            tsAcq.setAccumDose(self.dosePerTilt.get() * len(angles))
            ts.setAcquisition(tsAcq)
            ts.setAnglesCount(len(angles))
            outSet.append(ts)
            bad = [v for v in excluded.get(tsId, []) if not 1 <= v <= nViews]
            if bad:
                raise ValueError(f"{tsId}: excluded views {bad} are outside 1..{nViews}")
            for index, angle in enumerate(angles, start=1):
                ti = TiltImage(location=(index, stack), tiltAngle=float(angle),
                               acquisitionOrder=index)
                ti.setSamplingRate(tsSampling)
                tiAcq = tsAcq.clone()
                tiAcq.setDosePerFrame(self.dosePerTilt.get())
                tiAcq.setAccumDose(self.dosePerTilt.get() * index)
                ti.setAcquisition(tiAcq)
                if xf is not None:
                    matrix = np.eye(3)
                    matrix[:2, :3] = xf[index - 1]
                    ti.setTransform(Transform(matrix))
                if halves:
                    ti.setOddEven(halves)
                ti.setEnabled(index not in excluded.get(tsId, []))
                ts.append(ti)
            x, y = ts.getFirstItem().getXDim(), ts.getFirstItem().getYDim()
            origin = Transform()
            origin.setShifts(-x / 2 * tsSampling, -y / 2 * tsSampling, 0)
            ts.setOrigin(origin)
            outSet.update(ts)
        if sampling is None:
            raise ValueError(f"no stack matches {self.filesPattern.get()} in {self.filesPath.get()}")
        outSet.setSamplingRate(sampling)
        outSet.write()
        self._defineOutputs(**{OUTPUT_TILT_SERIES: outSet})

    # -------------------------------------------------------------------------- info
    def _validate(self):
        errors = []
        if not self.filesPath.get() or not os.path.isdir(self.filesPath.get()):
            errors.append("The folder does not exist.")
            return errors
        if not self._stacks():
            errors.append(f"No stack matches {self.filesPattern.get()} in {self.filesPath.get()}.")
        try:
            _parseExcluded(self.excludedViews.get())
        except Exception as exc:
            errors.append(f"Excluded views: {exc}")
        return errors

    def _warnings(self):
        if self.filesPath.get() and os.path.isdir(self.filesPath.get()) and not self.interpolated.get():
            if self.useXf.get() and not any(self._companion(s, ".xf") for s in self._stacks()):
                return ["No .xf file found: the tilt series are imported without alignment."]
        return []

    def _summary(self):
        out = getattr(self, OUTPUT_TILT_SERIES, None)
        if out is None:
            return ["Outputs are not ready yet."]
        flags = [f for f, on in (("alignments", out.hasAlignment()), ("odd/even stacks", out.hasOddEven()),
                                 ("already interpolated", out.interpolated())) if on]
        return [f"{out.getSize()} tilt series imported"
                + (f" with {', '.join(flags)}" if flags else "") + "."]

    def _methods(self):
        out = getattr(self, OUTPUT_TILT_SERIES, None)
        return [f"{out.getSize()} tilt series were imported from IMOD files."] if out else []
