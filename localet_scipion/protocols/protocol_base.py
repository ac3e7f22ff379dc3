"""What the localet boxes share: GPU parameters, the device option, tilt-series look-up."""
import logging
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from tomo.protocols import ProtTomoBase

from localet_scipion import Plugin

logger = logging.getLogger(__name__)


class ProtLocaletBase(EMProtocol, ProtTomoBase):
    """Base of the localet protocols (not a box)."""

    _label = None  # pyworkflow's mark of a base class: Protocol.isBase() hides it from the GUI lists

    @staticmethod
    def _addComputeParams(form, threads=1):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU",
                       help="localet runs on a CUDA GPU when Yes, on the CPU when No (slower "
                            "for the network, fine for WBP and small data).")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="GPU IDs",
                       help="GPU to use (0 is the first one). Give one GPU per thread: each "
                            "tilt series runs on the GPU of its thread.")
        form.addParam("extraArgs", params.StringParam, default="",
                      expertLevel=params.LEVEL_ADVANCED, label="Extra localet options",
                      help="Appended to each localet command, e.g. '--memory 8G'. See "
                           "'localet COMMAND --help'.")
        form.addParallelSection(threads=threads, mpi=0)

    def _deviceArg(self) -> str:
        # %(GPU)s is replaced by the GPU the executor gives this step's thread (0-based; the
        # queue executor renumbers the GPUs a job receives from 0).
        return "--device cuda:%(GPU)s" if self.usesGpu() else "--device cpu"

    def _extraArgs(self) -> str:
        extra = (self.extraArgs.get() or "").strip() if hasattr(self, "extraArgs") else ""
        return f" {extra}" if extra else ""

    def _runLocalet(self, command: str, args: str):
        Plugin.runLocalet(self, command, args + f" {self._deviceArg()}" + self._extraArgs())

    def _defineModelOutput(self, path, command, name, trainedOn, initModel, sources):
        """The ``Model`` output (a :class:`~localet_scipion.objects.LocaletModel` with its card)
        of the file ``localet COMMAND`` wrote at ``path``, related to each of ``sources``."""
        from localet_core.contracts.model_card import read_model_card
        from localet_scipion.constants import OUTPUT_MODEL
        from localet_scipion.objects import LocaletModel

        if not os.path.exists(path):
            raise FileNotFoundError(f"localet {command} wrote no {path}: see the log")
        model = LocaletModel(filename=path)
        model.setModelName(name)
        model.setCard(read_model_card(path))
        model.setTrainedOn(trainedOn)
        if initModel is not None:
            model.setInitModel(initModel)
        self._defineOutputs(**{OUTPUT_MODEL: model})
        for source in sources:
            self._defineSourceRelation(source, model)

    @staticmethod
    def _findTs(tsSet, tsId):
        """The tilt series ``tsId`` of ``tsSet``, ready to iterate its tilt images."""
        for ts in tsSet.iterItems():
            if ts.getTsId() == tsId:
                return ts
        raise KeyError(f"tilt series {tsId} is not in {tsSet}")

    def _citations(self):
        return ["kishore2025localized"]
