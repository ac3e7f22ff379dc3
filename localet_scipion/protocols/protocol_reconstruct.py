"""Box 'localet - reconstruct': tilt series -> tomograms (and odd/even half tomograms)."""
import json
import logging
import os
import traceback

import pyworkflow.protocol.params as params
from pyworkflow.object import String
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import Message, redStr
from tomo.objects import SetOfTiltSeries, SetOfTomograms, Tomogram

from localet_core.config import OutputOptions  # torch-free: the engine's defaults
from localet_core.contracts.model_card import fit_warnings, read_model_card, shipped_model_path
from localet_core.contracts.naming import half_name
from localet_scipion import convert
from localet_scipion.constants import (
    EVEN,
    METHOD_CHOICES,
    METHOD_PRETRAINED,
    METHOD_TRAINED,
    METHOD_WBP,
    MIRROR_CHOICES,
    ODD,
    OUTPUT_FAILED_TS,
    OUTPUT_TOMOGRAMS,
    PRETRAINED_MODEL,
)
from localet_scipion.protocols.protocol_base import ProtLocaletBase

logger = logging.getLogger(__name__)


class ProtLocaletReconstruct(ProtLocaletBase):
    """Reconstruct tomograms from aligned tilt series with localet.

    Put it right after any tilt-series alignment (IMOD, AreTomo...): the alignment
    (transformation matrices) is applied by resampling each view once into the aligned frame, or
    the stacks are used as they are when they were already interpolated. Excluded views are left out.
    Methods: the localet network with the pretrained model (default) or with a model trained by
    'localet - train' or imported by 'localet - import model', or weighted back-projection.
    With odd/even stacks, half tomograms are written too (for FSC validation and Cryo-CARE).
    """

    _label = "reconstruct"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_TOMOGRAMS: SetOfTomograms, OUTPUT_FAILED_TS: SetOfTiltSeries}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.failedMessages = String()

    # -------------------------------------------------------------------------- form
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputSetOfTiltSeries", params.PointerParam, pointerClass="SetOfTiltSeries",
                      important=True, label="Tilt series",
                      help="Aligned tilt series (transformation matrices from any alignment "
                           "protocol, or already interpolated stacks). Disabled tilt images "
                           "(excluded views) are left out.")
        form.addParam("method", params.EnumParam, choices=METHOD_CHOICES,
                      default=METHOD_PRETRAINED, label="Method",
                      help="localet pretrained: the network shipped with localet.\n"
                           "localet trained model: a model from 'localet - train' or "
                           "'localet - import model'.\n"
                           "WBP: weighted back-projection (localet fbp), IMOD-compatible.")
        form.addParam("inputModel", params.PointerParam, pointerClass="LocaletModel",
                      condition=f"method=={METHOD_TRAINED}", allowsNull=True,
                      label="Trained model", help="A localet model object.")
        form.addParam("thickness", params.IntParam, default=300, validators=[params.Positive],
                      label="Thickness (voxels)",
                      help="Tomogram size along Z (the beam), in output (binned) voxels.")
        form.addParam("binning", params.IntParam, default=OutputOptions.binning, validators=[params.Positive],
                      label="Binning",
                      help="Bin the tilt series by this factor before reconstructing: the "
                           "tomogram's voxel size is the tilt series' pixel size times this.")
        form.addParam("width", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Width (voxels)",
                      help="Tomogram size along X in output voxels; 0: the binned stack width.")
        form.addParam("doOddEven", params.BooleanParam, default=False,
                      label="Reconstruct odd/even halves?",
                      help="Also reconstruct the odd and even half stacks (from motion "
                           "correction) into half tomograms, attached to each tomogram as its "
                           "half maps: needed for 'localet - FSC validation' (half-set FSC) and "
                           "for Cryo-CARE.")
        form.addParam("mirrors", params.EnumParam, choices=MIRROR_CHOICES, default=0,
                      condition=f"method!={METHOD_WBP}", expertLevel=params.LEVEL_ADVANCED,
                      label="Mirror averaging",
                      help="Average the network with its mirror images (localet reconstruct "
                           "--mirrors): 2 (in Y, along the tilt axis) or 4 (also in X). A little "
                           "better, 2x or 4x the time.")
        self._addComputeParams(form)

    # -------------------------------------------------------------------------- steps
    def _insertAllSteps(self):
        runIds = []
        for ts in self.inputSetOfTiltSeries.get().iterItems():
            if ts.getSize() == 0:
                continue
            runIds.append(self._insertFunctionStep(self.reconstructStep, ts.getTsId(),
                                                   prerequisites=[], needsGPU=True))
        self._insertFunctionStep(self.createOutputStep, prerequisites=runIds, needsGPU=False)

    def _tsFolder(self, tsId):
        return self._getExtraPath(tsId)

    def _outputName(self, tsId):
        return os.path.abspath(os.path.join(self._tsFolder(tsId), f"{tsId}.mrc"))

    def _modelArg(self) -> str:
        if self.method.get() == METHOD_TRAINED:
            return convert.quote(os.path.abspath(self.inputModel.get().getFileName()))
        return PRETRAINED_MODEL

    def _gridArgs(self) -> str:
        args = f" --thickness {self.thickness.get()} --bin {self.binning.get()}"
        if self.width.get():
            args += f" --width {self.width.get()}"
        return args

    def reconstructStep(self, tsId):
        """Convert one tilt series to IMOD files and run localet on it. A failure is logged and
        the tilt series goes to the failed output; the other tilt series go on."""
        try:
            ts = self._findTs(self.inputSetOfTiltSeries.get(), tsId)
            folder = self._tsFolder(tsId)
            files = convert.tiltSeriesFiles(ts, folder)
            with open(os.path.join(folder, f"{tsId}_input.json"), "w") as f:
                json.dump(files, f, indent=1)
            output = self._outputName(tsId)
            halves = bool(self.doOddEven.get())
            if halves and not (files["odd"] and files["even"]):
                raise ValueError(f"{tsId} has no odd/even stacks")
            grid = self._gridArgs()
            if self.method.get() == METHOD_WBP:
                self._runLocalet("fbp", f"{convert.tiltSeriesArgs(files)}{grid} -o {convert.quote(output)}")
                if halves:
                    for half in (ODD, EVEN):
                        self._runLocalet("fbp", f"{convert.tiltSeriesArgs(files, files[half])}{grid} "
                                                f"-o {convert.quote(half_name(output, half))}")
            else:
                args = f"{convert.tiltSeriesArgs(files)}{grid} --model {self._modelArg()}"
                mirrors = MIRROR_CHOICES[self.mirrors.get()]
                if mirrors != MIRROR_CHOICES[0]:
                    args += f" --mirrors {mirrors}"
                if halves:
                    args += f" --odd {convert.quote(files[ODD])} --even {convert.quote(files[EVEN])}"
                self._runLocalet("reconstruct", f"{args} -o {convert.quote(output)}")
        except Exception as exc:
            logger.error(redStr(f"tsId = {tsId}: localet failed: {exc}"))
            logger.error(traceback.format_exc())
            with open(os.path.join(self._tsFolder(tsId), "FAILED"), "w") as f:
                f.write(f"{exc}\n")

    def _expectedFiles(self, tsId):
        output = self._outputName(tsId)
        files = [output]
        if self.doOddEven.get():
            files += [half_name(output, ODD), half_name(output, EVEN)]
        return files

    def createOutputStep(self):
        inSet = self.inputSetOfTiltSeries.get()
        sampling = inSet.getSamplingRate() * self.binning.get()
        tomos = self._createSetOfTomograms()
        tomos.copyInfo(inSet)
        tomos.setSamplingRate(sampling)
        failed = None
        messages = []
        for ts in inSet.iterItems():
            tsId = ts.getTsId()
            if ts.getSize() == 0:
                continue
            files = self._expectedFiles(tsId)
            failedFile = os.path.join(self._tsFolder(tsId), "FAILED")
            if os.path.exists(failedFile) or not all(os.path.exists(f) for f in files):
                reason = open(failedFile).read().strip() if os.path.exists(failedFile) else "no output"
                messages.append(f"{tsId}: {reason}")
                if failed is None:
                    failed = self._createSetOfTiltSeries(suffix="Failed")
                    failed.copyInfo(inSet)
                newTs = ts.clone()
                newTs.copyInfo(ts)
                failed.append(newTs)
                newTs.copyItems(ts)
                newTs.write()
                failed.update(newTs)
                continue
            tomo = Tomogram(tsId=tsId)
            tomo.setLocation(files[0])
            tomo.setSamplingRate(sampling)
            if ts.getAcquisition() is not None:
                tomo.setAcquisition(ts.getAcquisition().clone())
            tomo.setHalfMaps(files[1:] if len(files) == 3 else [])
            tomo.setOrigin()  # centred: Scipion's default for a volume
            tomos.append(tomo)
        self.failedMessages.set("\n".join(messages) or None)
        self._store(self.failedMessages)
        if tomos.getSize():
            self._defineOutputs(**{OUTPUT_TOMOGRAMS: tomos})
            self._defineSourceRelation(self.inputSetOfTiltSeries, tomos)
            if self.method.get() == METHOD_TRAINED:
                self._defineSourceRelation(self.inputModel, tomos)
        if failed is not None:
            failed.write()
            self._defineOutputs(**{OUTPUT_FAILED_TS: failed})
            self._defineSourceRelation(self.inputSetOfTiltSeries, failed)
        if not tomos.getSize():
            raise RuntimeError("localet failed on every tilt series:\n" + "\n".join(messages))

    # -------------------------------------------------------------------------- info
    def _validate(self):
        errors = []
        inSet = self.inputSetOfTiltSeries.get()
        if self.method.get() == METHOD_TRAINED and self.inputModel.get() is None:
            errors.append("Choose a trained model (from 'localet - train' or 'localet - import "
                          "model'), or another method.")
        if inSet is not None and self.doOddEven.get() and not inSet.hasOddEven():
            errors.append("The tilt series have no odd/even stacks: set 'Reconstruct odd/even "
                          "halves?' to No, or import them with their odd/even stacks.")
        return errors

    def _warnings(self):
        warnings = []
        inSet = self.inputSetOfTiltSeries.get()
        if inSet is not None and not inSet.hasAlignment() and not inSet.interpolated():
            warnings.append("The tilt series carry no alignment and are not marked as "
                            "interpolated: they will be reconstructed as they are. Align them "
                            "first (IMOD, AreTomo...) unless the stacks are already aligned.")
        card = self._modelCard()
        if inSet is not None and inSet.getSamplingRate() and card is not None:
            voxel = inSet.getSamplingRate() * self.binning.get()
            # "Tomogram voxel size 2.5 A is outside the model's training range 8-16 A; try Binning = 4."
            warnings += [f"Tomogram {warning}." for warning in fit_warnings(card, voxel, binning_option="Binning =")]
        return warnings

    def _modelCard(self):
        """The card of the model this run will use (the shipped one or the chosen model's file);
        None for WBP, or when the file is missing or unreadable."""
        if self.method.get() == METHOD_WBP:
            return None
        if self.method.get() == METHOD_TRAINED:
            model = self.inputModel.get()
            path = model.getFileName() if model is not None else None
        else:
            path = shipped_model_path(PRETRAINED_MODEL)
        try:
            return read_model_card(path) if path else None
        except (OSError, ValueError):
            return None

    def _summary(self):
        summary = []
        tomos = getattr(self, OUTPUT_TOMOGRAMS, None)
        if tomos is not None:
            first = tomos.getFirstItem()
            x, y, z = first.getDim()
            halves = ", with odd/even half maps" if tomos.hasOddEven() else ""
            summary.append(f"{tomos.getSize()} tomograms of {x} x {y} x {z} voxels, "
                           f"{tomos.getSamplingRate():.2f} A/voxel, by "
                           f"{METHOD_CHOICES[self.method.get()]}{halves}.")
        if self.failedMessages.get():
            summary.append("Failed (see FailedTiltSeries and the log):\n" + self.failedMessages.get())
        if not summary:
            summary.append("Outputs are not ready yet.")
        return summary

    def _methods(self):
        inSet = self.inputSetOfTiltSeries.get()
        if inSet is None:
            return []
        how = {METHOD_PRETRAINED: "with the pretrained localized network",
               METHOD_TRAINED: "with a trained localized network",
               METHOD_WBP: "by weighted back-projection"}[self.method.get()]
        text = (f"{inSet.getSize()} tilt series were reconstructed {how} in localet "
                f"[kishore2025localized], binned by {self.binning.get()}, "
                f"{self.thickness.get()} voxels thick")
        if self.doOddEven.get():
            text += ", together with odd/even half tomograms"
        return [text + "."]
