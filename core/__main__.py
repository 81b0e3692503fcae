"""``python -m core``: the command line for everything the pages do."""
import sys

from core.cli import main

sys.exit(main())
