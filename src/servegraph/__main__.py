"""Run the servegraph command line: ``python -m servegraph``."""

from .cli import main

raise SystemExit(main())
