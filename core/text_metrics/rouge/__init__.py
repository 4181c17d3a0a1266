"""Pond's `rouge` module for Hugging Face `evaluate`, loaded by path (see core.text_metrics)."""
