"""A guard against a hung child process, not a speed limit.

Tests wait for readiness signals (a line, a file, the process's exit), never for a time; a
child still running after ``HANG_S`` seconds is stuck, however loaded the machine is.
"""

HANG_S = 3600
