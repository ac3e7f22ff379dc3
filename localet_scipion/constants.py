"""Names shared by the localet Scipion plugin (variables, outputs, file names).

The names localet itself defines (half-map suffixes, the shipped model) come from
:mod:`localet_core.contracts`, so the plugin and the CLI cannot drift apart.
"""
from localet_core.config import MIRRORS
from localet_core.contracts.model_card import DEFAULT_MODEL
from localet_core.contracts.naming import EVEN, ODD, VOLUME_SUFFIX  # noqa: F401  (ODD, EVEN: for the boxes)

# Plugin variables (set them in scipion.conf / the environment)
#: Shell command that activates the environment holding localet and torch, e.g.
#: ``conda activate localet`` or ``source /opt/localet/bin/activate``. Empty: the Scipion env.
LOCALET_ENV_ACTIVATION = "LOCALET_ENV_ACTIVATION"
#: The localet program. Empty: ``localet`` when an activation is given, else
#: ``<scipion python> -m localet``.
LOCALET_PROGRAM = "LOCALET_PROGRAM"
#: Extra CUDA library folder added to LD_LIBRARY_PATH of localet jobs (optional).
LOCALET_CUDA_LIB = "LOCALET_CUDA_LIB"

LOCALET = "localet"

# Output names (IMOD's / cryoCARE's, which users already know)
OUTPUT_TOMOGRAMS = "Tomograms"
OUTPUT_FAILED_TS = "FailedTiltSeries"
OUTPUT_FSCS = "FSCs"
OUTPUT_MODEL = "Model"
OUTPUT_TILT_SERIES = "TiltSeries"

# Reconstruction methods (enum order in the form)
METHOD_PRETRAINED = 0
METHOD_TRAINED = 1
METHOD_WBP = 2
METHOD_CHOICES = ["localet pretrained", "localet trained model", "WBP (localet fbp)"]
MIRROR_CHOICES = [str(m) for m in MIRRORS]  # localet reconstruct --mirrors; the first is "off"

#: Name of the model shipped with localet (``localet reconstruct --model``).
PRETRAINED_MODEL = DEFAULT_MODEL

MRC = VOLUME_SUFFIX
