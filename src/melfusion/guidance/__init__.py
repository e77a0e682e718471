"""Image branch of MeLFusion: preprocessing, DDIM inversion, decoder self-attention K/V capture, caching."""
