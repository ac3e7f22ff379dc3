"""`localet` command group. Each sub-command lives in its own module under
:mod:`localet.commands` and only parses options, calls :mod:`localet_core`, and reports."""
from __future__ import annotations

import signal
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler's wall time, a closed terminal), raised like Ctrl-C so
    that every temporary file is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame) -> None:
    for other in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)  # let the clean-up finish
    raise Terminated(signum)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2; an
    engine field (``binning``) is named by its flag (``--bin``, :data:`FLAGS`). SIGTERM and
    SIGHUP clean up like Ctrl-C (exit code 128 + the signal's number; Ctrl-C: 130).

    Before torch is first imported it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment
    already sets it (:data:`localet_core.config.OMP_WAIT_POLICY`)."""
    import os

    from localet_core.config import OMP_WAIT_POLICY

    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    from localet.commands._options import FLAGS
    from localet_core.errors import InputError, LocaletError
    from localet_core.io.outputs import all_or_none

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    try:
        with all_or_none():  # a failed command leaves none of its outputs (localet_core.io.outputs)
            # the command line as typed, for the header labels of the outputs (_options.history_label)
            cli.main(args=sys.argv[1:], standalone_mode=False, obj={"argv": list(sys.argv[1:])})
    except click.exceptions.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Terminated):  # click turns a KeyboardInterrupt into Abort
            click.echo(f"Terminated ({signal.Signals(cause.signum).name}).", err=True)
            sys.exit(128 + cause.signum)
        if isinstance(cause, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
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
    except MemoryError:
        click.echo("Error: not enough memory for this job: give a smaller --memory budget, "
                   "--shape or --thickness, or use a larger machine", err=True)
        sys.exit(2)
    except Terminated as exc:
        click.echo(f"Terminated ({signal.Signals(exc.signum).name}).", err=True)
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
