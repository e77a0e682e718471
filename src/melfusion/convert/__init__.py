"""Loaders that turn full-size third-party checkpoints into MeLFusion pipeline components.

- :func:`load_tango_music_components`: a TANGO folder (``{main,vae,stft}_config.json`` +
  ``pytorch_model_{main,vae,stft}.bin``) -> music UNet, audio VAE, HiFi-GAN vocoder, scheduler, T5.
- :func:`load_image_ldm_components`: a diffusers Stable Diffusion 1.5 / 2.1 folder or hub id -> the
  frozen image LDM (UNet, VAE, DDIM scheduler, CLIP text encoder + tokenizer).

``melfusion convert tango`` combines both into one pipeline folder.
"""

from melfusion.convert.stable_diffusion import check_stable_diffusion, load_image_ldm_components
from melfusion.convert.tango import check_tango_dir, load_tango_music_components

__all__ = [
    "check_stable_diffusion",
    "check_tango_dir",
    "load_image_ldm_components",
    "load_tango_music_components",
]
