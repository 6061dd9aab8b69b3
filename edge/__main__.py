"""`python -m edge` == the `edge` command."""

from .cli import main

raise SystemExit(main())
