"""`localet train`: supervised training of a localized network from (tilt series, reference) pairs."""
from __future__ import annotations

import click

from localet.commands._options import as_text, core_option, progress_option, reports_progress
from localet_core import config
from localet_core.config import ModelConfig, TrainConfig

EPILOG = """\b
Examples:
  localet train --pair TS_01.st TS_01.tlt TS_01_ref.mrc --val-pair TS_02.st TS_02.tlt TS_02_ref.mrc --bin 4 -o run1
  localet train --pairs pairs.star --steps 20000 --loss l1 --drop-tilts 0.3 -o run2 --resume
  torchrun --nproc_per_node 2 -m localet train --pairs pairs.star -o run3
  localet train --pairs apof_a/pairs.star --pairs apof_b/pairs.star --init localet-default -o apof   # your specimen
\b
pairs.star: a data block with columns stack, tlt, reference and optional xf (or aln), odd, even,
exclude, split (train|val); relative paths are relative to the STAR file.
"""


@click.command("train", epilog=EPILOG)
@click.option("--pair", "pairs", nargs=3, multiple=True, type=click.Path(dir_okay=False),
              metavar="STACK TLT REF", help="A training pair: stack, angles, reference volume (repeatable).")
@click.option("--val-pair", "val_pairs", nargs=3, multiple=True, type=click.Path(dir_okay=False),
              metavar="STACK TLT REF", help="A held-out validation pair (repeatable).")
@click.option("--pairs", "star", type=click.Path(dir_okay=False), multiple=True,
              help="STAR list of pairs (see below); repeatable (e.g. one `localet simulate` folder each).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for NAME.safetensors, checkpoint.pt, log.csv, summary.json.")
@core_option("--name", "model_name", setting=("localet_core.network.training.train", "model_name"),
             default="model", help="Model file name (no extension).")
@core_option("--bin", "binning", type=int, setting=(TrainConfig, "binning"),
             help="Binning of the stacks; the references must be on the binned grid.")
@core_option("--steps", type=int, setting=(TrainConfig, "steps"))
@core_option("--batch-size", type=int, setting=(TrainConfig, "batch_size"), help="Voxels per step.")
@core_option("--lr", type=float, setting=(TrainConfig, "lr"), help="AdamW peak learning rate.")
@core_option("--weight-decay", type=float, setting=(TrainConfig, "weight_decay"))
@core_option("--loss", type=click.Choice(config.LOSSES), setting=(TrainConfig, "loss"))
@core_option("--seed", type=int, setting=(TrainConfig, "seed"))
@core_option("--val-every", type=int, setting=(TrainConfig, "val_every"))
@core_option("--checkpoint-every", type=int, setting=(TrainConfig, "checkpoint_every"))
@core_option("--clip-reference", type=float, metavar="K", setting=(TrainConfig, "reference_clip"),
             help="Scale references robustly and clamp them to +-K (a few extreme voxels such as "
                  "gold then neither set the scale nor teach extreme outputs); 0: plain z-score.")
@click.option("--init", metavar="MODEL", help="Start from this model (name or .safetensors): fine-tuning; "
              "its architecture replaces the architecture options.")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/checkpoint.pt (same result as uninterrupted).")
@core_option("--drop-tilts", type=float, setting=(TrainConfig, "drop_tilts"),
             help="Augmentation: drop up to this fraction of the tilts.")
@core_option("--noise", type=float, setting=(TrainConfig, "noise"),
             help="Augmentation: Gaussian noise std added to the normalised views.")
@click.option("--no-halves", is_flag=True, help="Do not use the odd/even half stacks as augmentation.")
@core_option("--slab-rows", type=int, setting=(TrainConfig, "slab_rows"),
             help="Train on slabs: each step runs the exact fast form on this many consecutive rows (Y) "
                  "of one pair and fits every voxel of them (--batch-size unused) [default: random "
                  "voxels through the patch form].")
@core_option("--refresh-every", type=int, setting=(TrainConfig, "refresh_every"),
             help="Steps between augmentation draws.")
@core_option("--patch-size", type=int, setting=(ModelConfig, "patch_size"), help="P (odd).")
@core_option("--step", "patch_step", type=int, setting=(ModelConfig, "step"), help="Delta, in binned pixels.")
@core_option("--channels", type=int, setting=(ModelConfig, "channels"), help="First-layer channels k.")
@core_option("--hidden", setting=(ModelConfig, "hidden"), to_text=as_text, help="Hidden widths, comma-separated.")
@core_option("--encoder", setting=(ModelConfig, "encoder"), to_text=as_text,
             help="Per-view encoder: widths of its convolutions, comma-separated (empty: none). "
                  "With --init MODEL of the same architecture without one, the encoder is added to it "
                  "(the model starts as MODEL exactly).")
@core_option("--encoder-channels", type=int, setting=(ModelConfig, "encoder_channels"),
             help="Channels the encoder back-projects (with --encoder).")
@core_option("--volume-head", setting=(ModelConfig, "volume_head"), to_text=as_text,
             help="3D head: widths of its 3x3x3 convolutions over the volume of per-voxel features, "
                  "comma-separated (empty: none); needs --slab-rows. With --init MODEL without one, "
                  "it is added to that model (starting as MODEL exactly).")
@core_option("--context-channels", type=int, setting=(ModelConfig, "context_channels"),
             help="Context channels: first-layer channels on a wide, coarse patch of each view "
                  "(0: none). With --init MODEL without them, they are added to it (starting as MODEL "
                  "exactly).")
@core_option("--context-patch", type=int, setting=(ModelConfig, "context_patch"),
             help="Size of the context channels' coarse patch (odd, samples).")
@core_option("--context-step", type=int, setting=(ModelConfig, "context_step"),
             help="The coarse patch's sampling step and low-pass box (odd, binned pixels).")
@core_option("--encoder-kernel", type=int, setting=(ModelConfig, "encoder_kernel"),
             help="Encoder convolution size (odd, detector pixels).")
@core_option("--angle-basis", type=int, setting=(ModelConfig, "n_angle_basis"), help="Legendre terms per kernel.")
@core_option("--activation", type=click.Choice(config.ACTIVATIONS), setting=(ModelConfig, "activation"))
@core_option("--view-norm", type=click.Choice(config.VIEW_NORMS), setting=(ModelConfig, "view_norm"),
             help="Normalise the views by one z-score over the stack, or divide each view by its own "
                  "mean first (removes attenuation from the input; needs raw positive intensities).")
@core_option("--device", setting=("localet_core.device.resolve_device", "spec"), default="auto",
             help="auto, cpu or cuda:N.")
@progress_option
@reports_progress
def command(pairs, val_pairs, star, out_dir, model_name, binning, steps, batch_size, lr, weight_decay,
            loss, seed, val_every, checkpoint_every, resume, drop_tilts, noise, no_halves, slab_rows, refresh_every,
            patch_size, patch_step, channels, hidden, encoder, encoder_channels, volume_head, context_channels, context_patch,
            context_step, encoder_kernel, angle_basis, activation, view_norm, device, progress, init, clip_reference):
    """Train a localized network on pairs of tilt series and reference volumes.

    The defaults are the shipped model's recipe (L2 loss, references clamped at +-60 as in its
    last stage, patch size 13, a quarter of the tilts dropped; docs/network.md) but shorter: 2,000
    steps at a peak learning rate of 1e-3 instead of its 24,000 at 3e-3, so a first run takes
    minutes.

    Writes OUT_DIR/NAME.safetensors (weights + JSON model card) for `localet reconstruct --model`,
    a per-step log.csv, a summary.json, and checkpoint.pt for --resume.
    """
    from pathlib import Path

    from localet_core.contracts.model_card import model_file
    from localet_core.errors import InputError
    from localet_core.io.outputs import guard_outputs
    from localet_core.network.checkpoint import CHECKPOINT_NAME, LOG_NAME
    from localet_core.network.training import PairSpec, read_pairs_star, train

    specs = [PairSpec(*p) for p in pairs] + [PairSpec(*p, split="val") for p in val_pairs]
    for path in star:
        specs += read_pairs_star(path)
    if not specs:
        raise InputError("--pair", "give training pairs with --pair or --pairs")
    out = Path(out_dir)
    inputs = [*star, init if init and str(init).endswith(".safetensors") else None]
    inputs += [getattr(s, f) for s in specs for f in ("stack", "tlt", "reference", "xf", "odd", "even")]
    guard_outputs([model_file(out / model_name), out / CHECKPOINT_NAME, out / LOG_NAME, out / "summary.json"],
                  inputs=inputs, folders=[out], keep_on_failure=True)  # a checkpoint is kept for --resume
    if resume and not (out / CHECKPOINT_NAME).is_file():
        click.echo(f"Warning: --resume: no {out / CHECKPOINT_NAME} yet; starting from step 0", err=True)
    widths = _widths("--hidden", hidden)
    enc_widths = _widths("--encoder", encoder)
    mc = ModelConfig(patch_size=patch_size, step=patch_step, channels=channels, hidden=widths,
                     n_angle_basis=angle_basis, activation=activation, encoder=enc_widths,
                     encoder_channels=encoder_channels if enc_widths else 0, encoder_kernel=encoder_kernel,
                     volume_head=_widths("--volume-head", volume_head), view_norm=view_norm,
                     context_channels=context_channels, context_patch=context_patch, context_step=context_step)
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss=loss,
                     seed=seed, binning=binning, val_every=val_every, checkpoint_every=checkpoint_every,
                     refresh_every=refresh_every, slab_rows=slab_rows, use_halves=not no_halves, drop_tilts=drop_tilts, noise=noise,
                     reference_clip=clip_reference or None)  # 0: plain z-score
    if init is not None:  # fine-tuning: the starting model fixes the architecture (+ what it grows)
        from localet_core.network.model import grown_config
        from localet_core.network.modelfile import load_model

        mc = grown_config(load_model(init)[0].config, mc)
    summary = train(specs, out_dir, mc, tc, device=device, resume=resume, progress=progress,
                    model_name=model_name, init_model=init)
    if summary.get("model_file"):
        val = summary["final_val_loss"]
        click.echo(f"{summary['model_file']}: {summary['steps_done']} steps, train loss "
                   f"{summary['first_loss']:.4g} -> {summary['final_loss']:.4g}"
                   + (f", val loss {val:.4g}" if val is not None else "")
                   + f", {summary['seconds']:.1f} s on {summary['device']}", err=True)


def _widths(flag: str, text: str) -> tuple:
    """``"32,32"`` -> ``(32, 32)`` (an empty text: ``()``)."""
    from localet_core.errors import InputError

    try:
        return tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise InputError(flag, f"expected whole numbers like 32,32, got {text!r}") from None
