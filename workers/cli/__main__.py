"""``python -m workers.cli``: the same as ``tally``."""

from workers.cli import main

main()
