"""melfusion: music from an image plus a text prompt (MeLFusion, Art2Mus)."""

__version__ = "0.1.0"
