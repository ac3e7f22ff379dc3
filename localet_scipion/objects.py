"""Scipion objects of the localet plugin."""
import json
import os

import pyworkflow.object as pwobj
from pwem.objects import EMObject


class LocaletModel(EMObject):
    """A trained localet network: a ``.safetensors`` file (``localet train`` output, or a model
    imported from disk) and a few facts from its card, shown in the GUI and in summaries."""

    def __init__(self, filename=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._filename = pwobj.String(filename)
        self._modelName = pwobj.String(kwargs.get("modelName"))
        self._card = pwobj.String()  # JSON text: the model card, when one was found
        self._trainedOn = pwobj.CsvList(pType=str)  # tsIds of the training pairs
        self._initModel = pwobj.String()  # model it was fine-tuned from, if any

    def getFileName(self):
        return self._filename.get()

    def setFileName(self, filename):
        self._filename.set(filename)

    def getModelName(self):
        return self._modelName.get() or os.path.splitext(os.path.basename(self.getFileName() or ""))[0]

    def setModelName(self, name):
        self._modelName.set(name)

    def getCard(self) -> dict:
        text = self._card.get()
        return json.loads(text) if text else {}

    def setCard(self, card: dict):
        self._card.set(json.dumps(card, sort_keys=True) if card else None)

    def getTrainedOn(self):
        return list(self._trainedOn)

    def setTrainedOn(self, tsIds):
        self._trainedOn.set(list(tsIds))

    def getInitModel(self):
        return self._initModel.get()

    def setInitModel(self, name):
        self._initModel.set(name)

    def __str__(self):
        extra = f", fine-tuned from {self.getInitModel()}" if self.getInitModel() else ""
        trained = f", trained on {len(self._trainedOn)} tilt series" if len(self._trainedOn) else ""
        return f"localet model {self.getModelName()} ({self.getFileName()}{trained}{extra})"
