"""The ``ostr-ray`` command line (typer): one module per command group, options grouped in small objects."""

from ostr_ray.cli.app import app

__all__ = ["app"]
