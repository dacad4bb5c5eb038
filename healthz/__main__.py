"""``python -m healthz``: the healthz command."""

from healthz.cli import main

main()
