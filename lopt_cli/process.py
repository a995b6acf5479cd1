"""How a command-line process ends.

An interrupt can arrive while XLA is compiling or running on its own threads. Python's normal
shutdown then tears down modules and objects those threads still use, and the process could end
in a segmentation fault after printing its one-line message. So after an interrupt the console
scripts flush their output and leave at once with status 130, skipping that shutdown. Nothing
is lost by it: every run file but ``metrics.jsonl`` is written atomically (a temporary file,
then a rename), and ``metrics.jsonl`` is appended one whole line per meta-step (a damaged last
line is skipped when it is read).

Only Ctrl-C (SIGINT) comes here in every command. ``lopt meta-train`` turns SIGTERM into the
same orderly stop (status 130); the other commands leave SIGTERM to its default, which ends the
process at once (status 143, ``-15`` as a subprocess).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

#: Exit status of a command stopped by Ctrl-C (SIGINT; meta-training also by SIGTERM): 128 + SIGINT.
INTERRUPTED = 130


def run_script(main: Callable[[], int]) -> None:
    """Runs a command's ``main`` as a console script and exits with its status.

    After an interrupt (``main`` raised ``SystemExit(130)``) the process exits at once, skipping
    the interpreter's shutdown; any other ending is Python's ordinary one.

    Args:
        main: the command's entry point; returns the exit status or raises ``SystemExit``.
    """
    try:
        status = main()
    except SystemExit as e:
        if e.code != INTERRUPTED:
            raise
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
                pass
        os._exit(INTERRUPTED)
    sys.exit(status)
