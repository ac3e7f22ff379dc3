"""`localet` command group. Each sub-command lives in its own module under
:mod:`localet.commands` and only parses options, calls :mod:`localet_core`, and reports."""
from __future__ import annotations

import sys

import click

from localet.commands import register_all


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="localet")
def cli() -> None:
    """localet: cryo-ET reconstruction with localized supervised learning.

    Inputs follow IMOD's conventions (.st/.mrc stacks, .tlt angles, .xf alignments); outputs
    are MRC volumes oriented as IMOD's `tilt -RotateBy90` (numpy order Z, Y, X).
    """


register_all(cli)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2; an
    engine field (``binning``) is named by its flag (``--bin``, :data:`FLAGS`)."""
    from localet.commands._options import FLAGS
    from localet_core.errors import InputError, LocaletError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InputError as exc:
        click.echo(f"Error: {exc.labelled(FLAGS)}", err=True)
        sys.exit(2)
    except LocaletError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
