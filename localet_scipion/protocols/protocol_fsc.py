"""Box 'localet - FSC validation': half-set FSC of tomograms with half maps, or FSC of two sets
of tomograms matched by tsId (localet against a reference)."""
import logging
import os
import traceback

import pyworkflow.protocol.params as params
from pwem.objects import FSC, SetOfFSCs
from pyworkflow.object import String
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import redStr

from localet_core.contracts.naming import plot_name, prior_proof_name
from localet_core.contracts.tolerances import same_pixel_size
from localet_scipion import Plugin, convert
from localet_scipion.constants import OUTPUT_FSCS
from localet_scipion.protocols.protocol_base import ProtLocaletBase

logger = logging.getLogger(__name__)

MODE_HALVES = 0
MODE_REFERENCE = 1


class ProtLocaletFsc(ProtLocaletBase):
    """Fourier Shell Correlation of tomograms, with localet fsc.

    Half maps: for tomograms from 'localet - reconstruct' with odd/even, the prior-proof
    resolution its run wrote (each network half against the other half's weighted
    back-projection: no learned prior can raise it); for other half maps, the plain FSC between
    the odd and even half tomograms, which measures reproducibility and is optimistic for any
    learned method.
    Reference: the FSC between each tomogram and the tomogram with the same tsId in a reference
    set (e.g. localet against Cryo-CARE + IsoNet, or against a simulation's ground truth).
    With the tilt range, the FSC is also split outside/inside the missing wedge (in the STAR
    files and plots of the extra folder). Outputs a SetOfFSCs: Scipion's FSC viewer plots it.
    """

    _label = "FSC validation"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_FSCS: SetOfFSCs}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.resolutions = String()

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("mode", params.EnumParam, choices=["half maps (odd/even)", "against a reference set"],
                      default=MODE_HALVES, display=params.EnumParam.DISPLAY_HLIST,
                      label="Compare", help="Half maps of each tomogram, or each tomogram "
                                            "against the reference tomogram with the same tsId.")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms")
        form.addParam("referenceTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      condition=f"mode=={MODE_REFERENCE}", allowsNull=True,
                      label="Reference tomograms",
                      help="Matched by tsId; same size and sampling as the tomograms.")
        form.addParam("useWedge", params.BooleanParam, default=True,
                      label="Split at the missing wedge?",
                      help="Use the tilt range of each tomogram's acquisition to also compute the "
                           "FSC outside and inside the missing wedge.")
        form.addParam("extraArgs", params.StringParam, default="",
                      expertLevel=params.LEVEL_ADVANCED, label="Extra localet options",
                      help="Appended to 'localet fsc', e.g. '--mask mask.mrc'.")
        form.addParallelSection(threads=1, mpi=0)

    # -------------------------------------------------------------------------- steps
    def _pairs(self):
        """{tsId: (tomogram A, tomogram B, tilt range or None)} of the comparisons to run."""
        pairs = {}
        refs = {}
        if self.mode.get() == MODE_REFERENCE and self.referenceTomograms.get() is not None:
            refs = {t.getTsId(): os.path.abspath(t.getFileName())
                    for t in self.referenceTomograms.get().iterItems()}
        for tomo in self.inputTomograms.get().iterItems():
            tsId = tomo.getTsId()
            if self.mode.get() == MODE_HALVES:
                halves = list(tomo.getHalfMaps(asList=True)) if tomo.hasHalfMaps() else []
                if len(halves) != 2:
                    continue
                a, b = (os.path.abspath(h) for h in halves)
            else:
                if tsId not in refs:
                    continue
                a, b = os.path.abspath(tomo.getFileName()), refs[tsId]
            tilt = None
            acq = tomo.getAcquisition()
            if self.useWedge.get() and acq is not None and acq.getAngleMin() is not None \
                    and acq.getAngleMax() is not None and acq.getAngleMin() < acq.getAngleMax():
                tilt = (acq.getAngleMin(), acq.getAngleMax())
            prior = ""
            if self.mode.get() == MODE_HALVES and os.path.exists(prior_proof_name(os.path.abspath(tomo.getFileName()))):
                prior = prior_proof_name(os.path.abspath(tomo.getFileName()))
            pairs[tsId] = (a, b, tilt, tomo.getSamplingRate(), prior)
        return pairs

    def _insertAllSteps(self):
        ids = [self._insertFunctionStep(self.fscStep, tsId, *pair, needsGPU=False)
               for tsId, pair in self._pairs().items()]
        self._insertFunctionStep(self.createOutputStep, prerequisites=ids, needsGPU=False)

    def _starName(self, tsId):
        return os.path.abspath(self._getExtraPath(f"{tsId}_fsc.star"))

    def fscStep(self, tsId, a, b, tilt, sampling, prior=""):
        star = self._starName(tsId)
        if prior:  # the reconstruct run's prior-proof table and plot
            import shutil

            shutil.copyfile(prior, star)
            if os.path.exists(plot_name(prior)):
                shutil.copyfile(plot_name(prior), plot_name(star))
            return
        args = (f"{convert.quote(a)} {convert.quote(b)} --pixel-size {sampling:g} -o {convert.quote(star)}"
                f" --plot {convert.quote(plot_name(star))}")
        if tilt:
            args += f" --tlt {tilt[0]:g},{tilt[1]:g}"
        try:
            Plugin.runLocalet(self, "fsc", args + self._extraArgs())
        except Exception as exc:
            logger.error(redStr(f"tsId = {tsId}: localet fsc failed: {exc}"))
            logger.error(traceback.format_exc())

    def createOutputStep(self):
        fscs = SetOfFSCs(filename=self._getPath("fscs.sqlite"))
        lines = []
        for tsId in self._pairs():
            star = self._starName(tsId)
            if not os.path.exists(star):
                lines.append(f"{tsId}: failed (see the log)")
                continue
            prior = convert.isPriorProofTable(star)
            x, y = convert.priorProofCurve(star) if prior else convert.fscCurve(star)
            fsc = FSC(objLabel=f"{tsId} (prior-proof C_est)" if prior else tsId)
            fsc.setData(x, y)
            fscs.append(fsc)
            if prior:
                lines.append(f"{tsId}: prior-proof resolution {convert.priorProofResolution(star)} "
                             "(criterion 0.5 on each half's estimated correlation with the signal)")
                continue
            res = convert.fscResolutions(star)
            text = ", ".join(f"{crit}: {value:.1f} A" for crit, value in res.get("all", {}).items())
            wedge = res.get("inside_wedge", {}).get("0.143")
            if wedge is not None:
                text += f"; inside the wedge (0.143): {wedge:.1f} A"
            if self.mode.get() == MODE_HALVES:
                text += " (plain half-set FSC: optimistic for learned methods)"
            lines.append(f"{tsId}: {text}")
        self.resolutions.set("\n".join(lines) or None)
        self._store(self.resolutions)
        if not fscs.getSize():
            raise RuntimeError("No FSC could be computed:\n" + "\n".join(lines))
        fscs.write()
        self._defineOutputs(**{OUTPUT_FSCS: fscs})
        self._defineSourceRelation(self.inputTomograms, fscs)
        if self.mode.get() == MODE_REFERENCE:
            self._defineSourceRelation(self.referenceTomograms, fscs)

    # -------------------------------------------------------------------------- info
    def _validate(self):
        errors = []
        tomos = self.inputTomograms.get()
        if tomos is None:
            return errors
        if self.mode.get() == MODE_HALVES and not tomos.hasOddEven():
            errors.append("These tomograms have no half maps: reconstruct them with odd/even "
                          "halves, or compare them against a reference set.")
        if self.mode.get() == MODE_REFERENCE:
            refs = self.referenceTomograms.get()
            if refs is None:
                errors.append("Choose the reference tomograms.")
            elif not set(tomos.getTSIds()) & set(refs.getTSIds()):
                errors.append("No tsId is shared by the tomograms and the reference tomograms.")
            elif not same_pixel_size(refs.getSamplingRate(), tomos.getSamplingRate()):
                errors.append(f"Sampling differs: {tomos.getSamplingRate():.3f} A vs "
                              f"{refs.getSamplingRate():.3f} A in the reference.")
        return errors

    def _warnings(self):
        tomos, refs = self.inputTomograms.get(), self.referenceTomograms.get()
        if self.mode.get() == MODE_REFERENCE and tomos is not None and refs is not None:
            missing = sorted(set(tomos.getTSIds()) - set(refs.getTSIds()))
            if missing:
                return [f"No reference for {', '.join(missing)}: skipped."]
        return []

    def _summary(self):
        if not self.resolutions.get():
            return ["Outputs are not ready yet."]
        return ["Resolution (prior-proof estimate where the reconstruct run wrote one; else FSC "
                "criteria, whole volume):\n" + self.resolutions.get()]

    def _methods(self):
        what = ("between odd and even half tomograms" if self.mode.get() == MODE_HALVES
                else "against reference tomograms")
        return [f"Fourier shell correlations were computed {what} with localet "
                f"[kishore2025localized], also split inside and outside the missing wedge."]
