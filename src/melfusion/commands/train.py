"""`melfusion train`: Algorithm 1 with accelerate (`accelerate launch -m melfusion.cli train ...` to scale)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the music UNet and the visual synapse α on triplet data",
        description="Train MeLFusion (paper Algorithm 1). Settings come from --config and SECTION.KEY=VALUE "
        "overrides, e.g. train.max_steps=1000 optim.lr_alpha=1e-5 data.train_manifest=train.jsonl.",
    )
    p.add_argument("--config", default=None, help="YAML file with model/data/optim/train sections")
    p.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE settings applied after the file")
    p.add_argument(
        "--resume",
        default=None,
        help="'latest' or a checkpoint folder (safetensors + JSON; folders holding pickles are refused)",
    )
    p.add_argument(
        "--export",
        default=None,
        help="pipeline folder to write at the end (default: OUTPUT/final); it must be new, empty or an earlier "
        "export, never the run's own folder or an input (checked before training starts)",
    )
    p.add_argument("--no-export", action="store_true", help="do not write a pipeline folder at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from melfusion.recipes.embedded.components import is_component_config, run_component
    from melfusion.training.art2mus import is_art2mus_config

    if is_component_config(args.config):  # `trainer: component` → audio VAE / image VAE / image LDM
        return run_component(args)

    if is_art2mus_config(args.config):  # `trainer: art2mus` in the YAML → the Art2Mus projection trainer
        from melfusion.training.art2mus import run_art2mus

        return run_art2mus(args)
    from melfusion.training.config import load_config

    config = load_config(args.config, args.overrides)
    config.validate()
    import transformers

    from melfusion.training.loop import check_export_target, find_checkpoint
    from melfusion.training.trainer import MeLFusionTrainer, export_inputs

    if args.resume:  # before building models and the feature cache: a missing checkpoint is said at once
        find_checkpoint(config.train.output_dir, args.resume)
    if not args.no_export:  # before training: a refused target must not cost the run
        out = config.train.output_dir
        check_export_target(args.export or Path(out) / "final", out, export_inputs(config))

    transformers.logging.set_verbosity_error()
    trainer = MeLFusionTrainer(config)
    if trainer.sampler_summary and trainer.accelerator.is_main_process:
        print(trainer.sampler_summary)
    computed = trainer.precompute()  # batched image inversions (+ audio latents) into the feature cache
    if trainer.cache.enabled and trainer.accelerator.is_main_process:
        print(f"feature cache {trainer.cache.root}: {computed} items computed, the rest reused")
    history = trainer.train(resume=args.resume)
    if trainer.config.train.checkpoint_every:
        trainer.save_checkpoint()
    if not args.no_export:
        path = trainer.export(args.export)
        if trainer.accelerator.is_main_process:
            print(f"exported pipeline to {path}")
    if trainer.accelerator.is_main_process and history:
        print(f"step {history[-1]['step']}: loss {history[-1]['loss']:.4f}")
    trainer.accelerator.end_training()
    return 0
