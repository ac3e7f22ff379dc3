"""Box 'localet - train': (tilt series, reference tomogram) pairs -> a trained localet model."""
import os

import pyworkflow.protocol.params as params
from pyworkflow.utils import Message

from localet_core.config import TrainConfig  # torch-free: the engine's defaults
from localet_core.contracts.model_card import model_file
from localet_core.contracts.pairs import PairSpec, write_pairs_star
from localet_core.contracts.tolerances import same_pixel_size
from localet_scipion import convert
from localet_scipion.constants import OUTPUT_MODEL
from localet_scipion.objects import LocaletModel
from localet_scipion.protocols.protocol_base import ProtLocaletBase

MODEL_NAME = "model"


class ProtLocaletTrain(ProtLocaletBase):
    """Train (or fine-tune) a localet network on your own data.

    Each tilt series is paired with the reference tomogram of the same tsId, for example the
    output of Cryo-CARE + IsoNet on that tilt series: the network learns to map the tilt series
    to the reference in one pass, and then reconstructs new tilt series ('localet - reconstruct'
    with 'localet trained model') in minutes. The references must be on the grid the tilt series
    reconstructs to: voxel = pixel size x binning, same X/Y size, Z = the reference thickness.
    Give a starting model to fine-tune it instead of training from scratch.
    """

    _label = "train"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_MODEL: LocaletModel}

    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputSetOfTiltSeries", params.PointerParam, pointerClass="SetOfTiltSeries",
                      important=True, label="Tilt series", help="Aligned tilt series.")
        form.addParam("inputReferences", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Reference tomograms",
                      help="Matched to the tilt series by tsId (e.g. the output of the Cryo-CARE "
                           "or IsoNet boxes).")
        form.addParam("initModel", params.PointerParam, pointerClass="LocaletModel",
                      allowsNull=True, label="Starting model (optional)",
                      help="Fine-tune this model instead of training from scratch.")
        form.addParam("binning", params.IntParam, default=TrainConfig.binning, validators=[params.Positive],
                      label="Binning", help="Binning of the tilt series that puts them on the "
                                            "references' voxel size.")
        form.addParam("steps", params.IntParam, default=TrainConfig.steps, validators=[params.Positive],
                      label="Training steps")
        self._addComputeParams(form)

    # -------------------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep, needsGPU=True)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _matched(self):
        refs = {t.getTsId(): os.path.abspath(t.getFileName())
                for t in self.inputReferences.get().iterItems()}
        return [tsId for tsId in self.inputSetOfTiltSeries.get().getTSIds() if tsId in refs], refs

    def _pairsStar(self):
        return os.path.abspath(self._getExtraPath("pairs.star"))

    def _outDir(self):
        return os.path.abspath(self._getExtraPath("training"))

    def _modelFile(self):
        return str(model_file(os.path.join(self._outDir(), MODEL_NAME)))  # what `train --name` writes

    def convertInputStep(self):
        tsIds, refs = self._matched()
        pairs = []
        for tsId in tsIds:
            ts = self._findTs(self.inputSetOfTiltSeries.get(), tsId)
            files = convert.tiltSeriesFiles(ts, self._getExtraPath(tsId))
            pairs.append(PairSpec(stack=files["stack"], tlt=files["tlt"], reference=refs[tsId],
                                  xf=files["xf"], odd=files["odd"], even=files["even"],
                                  exclude=files["exclude"]))
        write_pairs_star(self._pairsStar(), pairs)

    def trainStep(self):
        args = (f"--pairs {convert.quote(self._pairsStar())} -o {convert.quote(self._outDir())} "
                f"--name {MODEL_NAME} --bin {self.binning.get()} --steps {self.steps.get()}")
        if self.initModel.get() is not None:
            args += f" --init {convert.quote(os.path.abspath(self.initModel.get().getFileName()))}"
        self._runLocalet("train", args)

    def createOutputStep(self):
        init = self.initModel.get()
        self._defineModelOutput(self._modelFile(), "train", f"{MODEL_NAME} (run {self.getObjId()})",
                                self._matched()[0], init.getModelName() if init is not None else None,
                                [self.inputSetOfTiltSeries, self.inputReferences])

    # -------------------------------------------------------------------------- info
    def _validate(self):
        errors = []
        tsSet, refs = self.inputSetOfTiltSeries.get(), self.inputReferences.get()
        if tsSet is None or refs is None:
            return errors
        tsIds, _ = self._matched()
        if not tsIds:
            errors.append("No tsId is shared by the tilt series and the reference tomograms.")
        voxel = tsSet.getSamplingRate() * self.binning.get()
        if not same_pixel_size(refs.getSamplingRate(), voxel):
            errors.append(f"The references have {refs.getSamplingRate():.3f} A/voxel but the tilt "
                          f"series binned by {self.binning.get()} give {voxel:.3f} A: set the "
                          "binning so they match.")
        return errors

    def _warnings(self):
        tsSet, refs = self.inputSetOfTiltSeries.get(), self.inputReferences.get()
        if tsSet is None or refs is None:
            return []
        tsIds, _ = self._matched()
        unmatched = sorted(set(tsSet.getTSIds()) - set(tsIds))
        warnings = [f"No reference for {', '.join(unmatched)}: not used."] if unmatched else []
        if 0 < len(tsIds) < 2:
            warnings.append("One training pair only: the model may not generalise; use a few.")
        return warnings

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Outputs are not ready yet."]
        return [f"Trained on {len(model.getTrainedOn())} tilt series "
                f"({', '.join(model.getTrainedOn())}), {self.steps.get()} steps: {model.getFileName()}"]

    def _methods(self):
        init = " starting from an existing model" if self.initModel.get() is not None else ""
        return [f"A localized reconstruction network [kishore2025localized] was trained{init} "
                f"on {len(self._matched()[0])} pairs of tilt series and reference tomograms "
                f"for {self.steps.get()} steps."]
