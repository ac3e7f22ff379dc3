"""The localet boxes. Scipion collects the protocol classes re-exported here.

The shared base, :class:`~localet_scipion.protocols.protocol_base.ProtLocaletBase`, is not
re-exported (as scipion-em plugins do with their base classes): Scipion's class map then never
lists it, and its ``_label = None`` marks it as a base (``Protocol.isBase()``) for any view that
walks subclasses.
"""
from localet_scipion.protocols.protocol_finetune import ProtLocaletFinetune
from localet_scipion.protocols.protocol_fsc import ProtLocaletFsc
from localet_scipion.protocols.protocol_import_model import ProtLocaletImportModel
from localet_scipion.protocols.protocol_import_ts import ProtLocaletImportTs
from localet_scipion.protocols.protocol_reconstruct import ProtLocaletReconstruct
from localet_scipion.protocols.protocol_train import ProtLocaletTrain

__all__ = ["ProtLocaletFinetune", "ProtLocaletFsc", "ProtLocaletImportModel", "ProtLocaletImportTs",
           "ProtLocaletReconstruct", "ProtLocaletTrain"]
