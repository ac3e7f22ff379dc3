"""The specimen side of the simulator: real macromolecule templates, cellular phantoms, and the
image-formation functions that act on 2D projections (CTF, dose filter, attenuation, counts).

The projector (line integrals at the tilt angles) lives elsewhere; see
:mod:`localet_core.simulate.optics` for how its output becomes an image.
"""
from .optics import (
                     apply_ctf,
                     attenuate,
                     critical_exposure,
                     ctf_2d,
                     dose_symmetric_order,
                     electron_wavelength,
                     exposure_filter,
                     image_intensity,
                     interaction_constant,
                     poisson_noise,
                     prior_dose,
)
from .phantom import FAMILIES, OBJECT_TYPES, Phantom, PhantomConfig, make_phantom, phantom_config
from .templates import (
                     available_templates,
                     ice_potential,
                     load_template,
                     lowpass_template,
                     place_template,
                     random_rotation,
                     rotate_resample,
                     template_metadata,
)

__all__ = [
    "Phantom", "PhantomConfig", "make_phantom", "phantom_config", "FAMILIES", "OBJECT_TYPES",
    "available_templates", "template_metadata", "ice_potential", "load_template",
    "lowpass_template", "random_rotation", "rotate_resample", "place_template",
    "electron_wavelength", "interaction_constant", "ctf_2d", "apply_ctf", "critical_exposure",
    "exposure_filter", "dose_symmetric_order", "prior_dose", "attenuate", "poisson_noise",
    "image_intensity",
]
