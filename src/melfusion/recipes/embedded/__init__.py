"""The embedded default model's recipe (`scripts/train_embedded.sh`, configs in `configs/embedded/`): the
synthetic corpus (`synth`, also `melfusion data synth`), the component trainers (`components`, run by
`melfusion train` for configs with `trainer: component`), and the probes used to measure it (`probes`,
`family`)."""
