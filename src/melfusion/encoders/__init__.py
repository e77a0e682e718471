"""Pretrained encoders shared by Art2Mus (its image encoder), pairing (the joint space) and evaluation (the
metrics): CLIP, ImageBind, and the weight-file plumbing (`base`: look-up with one-line errors, batching,
fingerprints). The metric-only embedders (VGGish, PANNs, CLAP) live in `melfusion.evaluation.embedders`."""
