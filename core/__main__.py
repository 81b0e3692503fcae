"""``python -m core``: the command line lives in the top-level `cli` package."""
from cli import main

raise SystemExit(main())
