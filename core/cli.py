"""What every command-line script shares: the error guard, the help layout, the progress bar."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from core.errors import InputError, RunStoppedError, SetupError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the script docstring's layout (it is the manual) and shows every default that
    the help text does not describe itself (those are None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where the manual is, not the full usage
    (which for the training scripts is 22 lines above the line that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main_guard(run: Callable[[], object]) -> int:
    """Run ``run()``; bad input becomes one line on stderr and exit status 2, not a traceback;
    a deliberate stop (signal, diverged loss) one line and its own status.
    """
    try:
        run()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SetupError as err:  # the machine lacks something (a library, a device)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RunStoppedError as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except OSError as err:  # the machine, not the code: disk full, folder removed, permissions
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space and run again",
    errno.EDQUOT: "free some space (disk quota) and run again",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable file system",
}


def describe_os_error(err: OSError) -> str:
    """One line: what failed, on which file, and what to do about it."""
    where = f" ({err.filename})" if err.filename else ""
    hint = _OS_ERROR_HINTS.get(err.errno)
    return f"{err.strerror or err}{where}" + (f"; {hint}" if hint else "")


def progress(items: Iterable, total: int, desc: str, initial: int = 0, show: bool = True) -> Any:
    """A tqdm bar on a terminal; on a pipe or file it redraws every 30 s (CI logs stay short)."""
    from tqdm import tqdm

    return tqdm(
        items,
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        leave=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        disable=not show,
    )
