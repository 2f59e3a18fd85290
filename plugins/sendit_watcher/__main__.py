"""``python -m sendit_watcher ACTION INI``: the same as ``sendit watcher ACTION INI``
(``sendit watcher start`` runs the daemon this way)."""
import sys

from sendit_core.cli import main

if __name__ == "__main__":
    sys.exit(main(["watcher", *sys.argv[1:]]))
