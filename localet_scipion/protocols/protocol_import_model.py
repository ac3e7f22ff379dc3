"""Box 'localet - import model': register a model file as a localet model object."""
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.utils import copyFile

from localet_core.contracts.model_card import read_model_card
from localet_scipion.constants import OUTPUT_MODEL
from localet_scipion.objects import LocaletModel


class ProtLocaletImportModel(EMProtocol):
    """Import a trained localet model (a .safetensors file from 'localet train', from a
    colleague, or from another project). The file is copied into the project."""

    _label = "import model"
    _devStatus = "BETA"
    _possibleOutputs = {OUTPUT_MODEL: LocaletModel}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("modelFile", params.FileParam, important=True, label="Model file (.safetensors)",
                      help="A model written by 'localet train'.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, needsGPU=False)

    def importStep(self):
        source = os.path.abspath(self.modelFile.get())
        card = read_model_card(source)  # refuses files that are not safetensors
        dest = self._getExtraPath(os.path.basename(source))
        copyFile(source, dest)
        model = LocaletModel(filename=dest)
        model.setModelName(card.get("name") or os.path.splitext(os.path.basename(source))[0])
        model.setCard(card)
        self._defineOutputs(**{OUTPUT_MODEL: model})

    def _validate(self):
        path = self.modelFile.get()
        if not path or not os.path.isfile(path):
            return ["The model file does not exist."]
        try:
            read_model_card(path)
        except (OSError, ValueError) as exc:
            return [str(exc)]
        return []

    def _summary(self):
        model = getattr(self, OUTPUT_MODEL, None)
        if model is None:
            return ["Outputs are not ready yet."]
        card = model.getCard()
        facts = ", ".join(f"{k}: {card[k]}" for k in ("name", "description", "package_version") if k in card)
        return [f"Imported {model.getModelName()}" + (f" ({facts})" if facts else "")]

    def _methods(self):
        return ["A trained localet model [kishore2025localized] was imported."]

    def _citations(self):
        return ["kishore2025localized"]
