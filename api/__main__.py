"""``python -m api [--host H] [--port P] [--workers N]``: the same as ``tally api``."""

from api.server import main

if __name__ == "__main__":
    main()
