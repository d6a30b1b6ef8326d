"""Entry point for the web role: ``python consumers/web.py`` == ``moderation web``."""

import sys

from moderation.cli import main

if __name__ == "__main__":
    sys.exit(main(["web", *sys.argv[1:]]))
