"""Pond: a low-code MLOps studio for analysts. All logic lives in this package;
the Streamlit app, the REST server and the CLI are thin layers over it."""

from __future__ import annotations

__version__ = "0.1.0"
