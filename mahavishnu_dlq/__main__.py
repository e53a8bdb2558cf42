"""``python -m mahavishnu_dlq``: the ``mahavishnu-dlq`` command line."""

from __future__ import annotations

from mahavishnu_dlq.cli import main

if __name__ == "__main__":
    main()
