"""`localet train`: supervised training of a localized network from (tilt series, reference) pairs."""
from __future__ import annotations

import click

EPILOG = """\b
Examples:
  localet train --pair TS_01.st TS_01.tlt TS_01_ref.mrc --val-pair TS_02.st TS_02.tlt TS_02_ref.mrc --bin 4 -o run1
  localet train --pairs pairs.star --steps 20000 --loss l1 --drop-tilts 0.3 -o run2 --resume
  torchrun --nproc_per_node 2 -m localet train --pairs pairs.star -o run3
\b
pairs.star: a data block with columns stack, tlt, reference and optional xf (or aln), odd, even,
exclude, split (train|val); relative paths are relative to the STAR file.
"""


@click.command("train", epilog=EPILOG)
@click.option("--pair", "pairs", nargs=3, multiple=True, type=click.Path(dir_okay=False),
              metavar="STACK TLT REF", help="A training pair: stack, angles, reference volume (repeatable).")
@click.option("--val-pair", "val_pairs", nargs=3, multiple=True, type=click.Path(dir_okay=False),
              metavar="STACK TLT REF", help="A held-out validation pair (repeatable).")
@click.option("--pairs", "star", type=click.Path(dir_okay=False), help="STAR list of pairs (see below).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for NAME.safetensors, checkpoint.pt, log.csv, summary.json.")
@click.option("--name", "model_name", default="model", show_default=True, help="Model file name (no extension).")
@click.option("--bin", "binning", type=int, default=1, show_default=True,
              help="Binning of the stacks; the references must be on the binned grid.")
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Voxels per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW peak learning rate.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--loss", type=click.Choice(["l1", "l2"]), default="l1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-every", type=int, default=100, show_default=True)
@click.option("--checkpoint-every", type=int, default=200, show_default=True)
@click.option("--clip-reference", type=float, metavar="K",
              help="Scale references robustly and clamp them to +-K (a few extreme voxels such as "
                   "gold then neither set the scale nor teach extreme outputs) [default: plain z-score].")
@click.option("--init", metavar="MODEL", help="Start from this model (name or .safetensors): fine-tuning; "
              "its architecture replaces the architecture options.")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/checkpoint.pt (same result as uninterrupted).")
@click.option("--drop-tilts", type=float, default=0.2, show_default=True,
              help="Augmentation: drop up to this fraction of the tilts.")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Augmentation: Gaussian noise std added to the normalised views.")
@click.option("--no-halves", is_flag=True, help="Do not use the odd/even half stacks as augmentation.")
@click.option("--refresh-every", type=int, default=50, show_default=True, help="Steps between augmentation draws.")
@click.option("--patch-size", type=int, default=9, show_default=True, help="P (odd).")
@click.option("--step", "patch_step", type=int, default=1, show_default=True, help="Delta, in binned pixels.")
@click.option("--channels", type=int, default=16, show_default=True, help="First-layer channels k.")
@click.option("--hidden", default="32,32", show_default=True, help="Hidden widths, comma-separated.")
@click.option("--angle-basis", type=int, default=6, show_default=True, help="Legendre terms per kernel.")
@click.option("--activation", type=click.Choice(["gelu", "relu"]), default="gelu", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda:N.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
def command(pairs, val_pairs, star, out_dir, model_name, binning, steps, batch_size, lr, weight_decay,
            loss, seed, val_every, checkpoint_every, resume, drop_tilts, noise, no_halves, refresh_every,
            patch_size, patch_step, channels, hidden, angle_basis, activation, device, progress, init, clip_reference):
    """Train a localized network on pairs of tilt series and reference volumes.

    Writes OUT_DIR/NAME.safetensors (weights + JSON model card) for `localet reconstruct --model`,
    a per-step log.csv, a summary.json, and checkpoint.pt for --resume.
    """
    from localet_core.errors import InputError
    from localet_core.model import ModelConfig
    from localet_core.training import PairSpec, TrainConfig, read_pairs_star, train

    specs = [PairSpec(*p) for p in pairs] + [PairSpec(*p, split="val") for p in val_pairs]
    if star:
        specs += read_pairs_star(star)
    if not specs:
        raise InputError("--pair", "give training pairs with --pair or --pairs")
    try:
        widths = tuple(int(h) for h in hidden.split(",") if h.strip())
        mc = ModelConfig(patch_size=patch_size, step=patch_step, channels=channels, hidden=widths,
                         n_angle_basis=angle_basis, activation=activation)
    except ValueError as exc:
        raise InputError("--patch-size/--step/--channels/--hidden", str(exc)) from None
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss=loss,
                     seed=seed, binning=binning, val_every=val_every, checkpoint_every=checkpoint_every,
                     refresh_every=refresh_every, use_halves=not no_halves, drop_tilts=drop_tilts, noise=noise,
                     reference_clip=clip_reference)
    if init is not None:  # fine-tuning: the starting model fixes the architecture
        from localet_core.modelfile import load_model

        mc = load_model(init)[0].config
    summary = train(specs, out_dir, mc, tc, device=device, resume=resume, progress=progress,
                    model_name=model_name, init_model=init)
    if summary.get("model_file"):
        val = summary["final_val_loss"]
        click.echo(f"{summary['model_file']}: {summary['steps_done']} steps, train loss "
                   f"{summary['first_loss']:.4g} -> {summary['final_loss']:.4g}"
                   + (f", val loss {val:.4g}" if val is not None else "")
                   + f", {summary['seconds']:.1f} s on {summary['device']}", err=True)
