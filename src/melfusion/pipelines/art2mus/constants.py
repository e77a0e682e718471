"""Art2Mus constants (light module: no torch / diffusers import)."""

from __future__ import annotations

# The fixed sentence of the T5 stream during training and image-only generation (paper §4).
SUPPORT_PROMPT = "Music representing the content of this artwork"
# The negative prompt of the paper's validation/generation (§5.2).
NEGATIVE_PROMPT = "Low quality."
# Generation defaults of the paper (§5.2): 200 DDIM steps, 10 s, AudioLDM 2's guidance 3.5.
NUM_INFERENCE_STEPS = 200
GUIDANCE_SCALE = 3.5
AUDIO_LENGTH_S = 10.0
# LLaVA's prompt for the artwork–description dataset (§3.2).
DESCRIBE_PROMPT = "Describe this artwork"
IMAGE_ENCODER_TYPES = ("clip", "imagebind", "none")
