"""Run Python under a fault the SQLite tests need, then exec it (``python -m``).

``python -m tests.integration._confined [--file-size-limit BYTES] [--no-dac-override]
-- ARGS...`` replaces itself with ``python ARGS...``:

``--file-size-limit``
    ``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored: a write past ``BYTES`` into any file
    fails with ``EFBIG`` instead of killing the process — a full disk, as far as
    the process can tell (both survive ``exec``).
``--no-dac-override``
    Drops ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` from the capability
    bounding set, so that after ``exec`` even root is bound by permission bits: a
    directory of mode 0555 is read-only to it. Exit status 77 when the process
    may not drop them (no ``CAP_SETPCAP``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
CANNOT_CONFINE = 77


def main() -> None:
    parser = argparse.ArgumentParser(prog="_confined")
    parser.add_argument("--file-size-limit", type=int)
    parser.add_argument("--no-dac-override", action="store_true")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    if options.file_size_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = options.file_size_limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if options.no_dac_override and os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                sys.stderr.write(
                    f"cannot drop capability {capability}: errno {ctypes.get_errno()}\n"
                )
                sys.exit(CANNOT_CONFINE)
    os.execv(sys.executable, [sys.executable, *args])  # noqa: S606 - our own interpreter


if __name__ == "__main__":
    main()
