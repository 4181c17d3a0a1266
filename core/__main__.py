"""`python -m core` runs the Pond CLI."""

from __future__ import annotations

from core.cli import main

raise SystemExit(main())
