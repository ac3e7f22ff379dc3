"""Box 'localet - fine-tune for a specimen': a map of your molecule + your tilt series -> a model."""
import os
import shutil

import pyworkflow.protocol.params as params
from pyworkflow.utils import Message

from localet_core.contracts.model_card import DEFAULT_MODEL, model_file
from localet_core.specimen import DEFAULT_COUNT, DEFAULT_STEPS, MODEL_NAME  # torch-free: the engine's defaults
from localet_scipion import convert
from localet_scipion.constants import OUTPUT_MODEL
from localet_scipion.objects import LocaletModel
from localet_scipion.protocols.protocol_base import ProtLocaletBase


class ProtLocaletFinetune(ProtLocaletBase):
    """Fine-tune the pretrained localet network for your specimen, from a map of its molecule.

    When a sample is mostly one molecule (a purified complex, an in-vitro sample), a model that
    has seen crowds of that molecule reconstructs it better than the general pretrained model.
    This box simulates such crowds from your map (a subtomogram average or an EMDB map, any
    units) as your tilt series were recorded: the first tilt series' pixel size x binning, tilt
    range and step (excluded views left out) and dose; then it fine-tunes the pretrained model on
    them (`localet finetune`). Use the model in 'localet - reconstruct' with 'localet trained
    model', at the same binning.
    """

    _label = "fine-tune for a specimen"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_MODEL: LocaletModel}

    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputSetOfTiltSeries", params.PointerParam, pointerClass="SetOfTiltSeries",
                      important=True, label="Tilt series",
                      help="The tilt series you will reconstruct: the first one's acquisition "
                           "(pixel size, tilt angles, excluded views, dose) is simulated.")
        form.addParam("inputMap", params.PointerParam, pointerClass="Volume", important=True,
                      label="Map of the molecule",
                      help="A subtomogram average or an imported EMDB map (any units and box; its "
                           "sampling rate is used).")
        form.addParam("binning", params.IntParam, default=1, validators=[params.Positive], label="Binning",
                      help="The binning you will reconstruct at: the model is trained at the tilt "
                           "series' pixel size x binning.")
        form.addParam("steps", params.IntParam, default=DEFAULT_STEPS, validators=[params.Positive],
                      label="Training steps", help="5000 is 3x faster and a little worse.")
        form.addParam("count", params.IntParam, default=DEFAULT_COUNT, validators=[params.GT(1)],
                      expertLevel=params.LEVEL_ADVANCED, label="Simulated series",
                      help="The last tenth is held out for validation.")
        form.addParam("thickness", params.StringParam, default="", expertLevel=params.LEVEL_ADVANCED,
                      label="Ice thickness (nm)", help="A value or a range such as 110,160; empty: a share "
                                                       "of the simulated depth.")
        self._addComputeParams(form)

    # -------------------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.finetuneStep, needsGPU=True)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _outDir(self):
        return os.path.abspath(self._getExtraPath("finetune"))

    def _mapFile(self):
        return os.path.abspath(self._getExtraPath("specimen_map.mrc"))

    def _modelFile(self):
        return str(model_file(os.path.join(self._outDir(), MODEL_NAME)))  # what `localet finetune` writes

    def _series(self):
        tsSet = self.inputSetOfTiltSeries.get()
        return self._findTs(tsSet, sorted(tsSet.getTSIds())[0])

    def convertInputStep(self):
        import mrcfile

        # the map with the sampling rate Scipion knows it by in its header (a copy: the input stays)
        volume = self.inputMap.get()
        shutil.copyfile(os.path.abspath(volume.getFileName()), self._mapFile())
        with mrcfile.open(self._mapFile(), mode="r+", permissive=True) as m:
            m.voxel_size = volume.getSamplingRate()

    def _dose(self):
        """Total e/A^2 of the used views from the acquisition's dose per tilt image; None when unset."""
        ts = self._series()
        perTilt = ts.getAcquisition().getDosePerFrame() or 0.0
        used = sum(1 for ti in ts.iterItems() if ti.isEnabled())
        return perTilt * used if perTilt > 0 else None

    def finetuneStep(self):
        ts = self._series()
        files = convert.tiltSeriesFiles(ts, self._getExtraPath(ts.getTsId()))
        # the stack, angles, excluded views and pixel size as every box passes them (no .xf: only
        # the acquisition is read)
        args = (f"{convert.tiltSeriesArgs({**files, 'xf': None})} --bin {self.binning.get()} "
                f"--templates {convert.quote(self._mapFile())} --steps {self.steps.get()} "
                f"--count {self.count.get()} -o {convert.quote(self._outDir())}")
        dose = self._dose()
        if dose:
            args += f" --dose {dose:g}"
        if (self.thickness.get() or "").strip():
            args += f" --thickness {self.thickness.get().strip()}"
        self._runLocalet("finetune", args)

    def createOutputStep(self):
        self._defineModelOutput(self._modelFile(), "finetune", f"specimen model (run {self.getObjId()})",
                                [], DEFAULT_MODEL, [self.inputSetOfTiltSeries, self.inputMap])  # simulated series only

    # -------------------------------------------------------------------------- info
    def _validate(self):
        volume = self.inputMap.get()
        if volume is None:
            return []
        if not volume.getSamplingRate() or volume.getSamplingRate() <= 0:
            return ["The map has no sampling rate: set it when importing it."]
        return []

    def _warnings(self):
        tsSet = self.inputSetOfTiltSeries.get()
        if tsSet is None or tsSet.getSize() < 2:
            return []
        return [f"The acquisition of {self._series().getTsId()} (the first tilt series) is simulated "
                "for all of them."]

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Outputs are not ready yet."]
        card = model.getCard()
        return [f"Fine-tuned for the specimen at {card.get('pixel_size_A', ['?'])[0]} A/voxel, "
                f"{self.steps.get()} steps: {model.getFileName()}"]

    def _methods(self):
        return [f"A localized reconstruction network [kishore2025localized] was fine-tuned for {self.steps.get()} "
                f"steps on {self.count.get()} simulated tilt series of crowds of the specimen's molecule, imaged "
                "as the tilt series were."]
