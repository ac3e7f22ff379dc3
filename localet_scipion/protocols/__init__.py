"""The localet boxes. Scipion collects the protocol classes re-exported here."""
from localet_scipion.protocols.protocol_base import ProtLocaletBase
from localet_scipion.protocols.protocol_fsc import ProtLocaletFsc
from localet_scipion.protocols.protocol_import_model import ProtLocaletImportModel
from localet_scipion.protocols.protocol_import_ts import ProtLocaletImportTs
from localet_scipion.protocols.protocol_reconstruct import ProtLocaletReconstruct
from localet_scipion.protocols.protocol_train import ProtLocaletTrain

__all__ = ["ProtLocaletBase", "ProtLocaletFsc", "ProtLocaletImportModel", "ProtLocaletImportTs",
           "ProtLocaletReconstruct", "ProtLocaletTrain"]
