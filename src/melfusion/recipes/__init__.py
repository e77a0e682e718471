"""Recipes: research code that builds and measures particular models, on top of the library (the library
never imports a recipe). `embedded/`: the embedded default model — its synthetic corpus, component trainers
(audio VAE, image VAE, image LDM), probes and family classifier; `peer_check`: FAD/FD cross-checked against a
peer implementation's formula."""
