"""Models: music UNet, audio VAE, vocoders, the visual synapse. Kept import-light."""
