"""Entry point for the worker role: ``python consumers/worker.py`` == ``moderation worker``."""

import sys

from moderation.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
