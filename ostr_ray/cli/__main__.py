"""``python -m ostr_ray.cli``: the same program as the ``ostr-ray`` script."""

from ostr_ray.cli.app import app

app(prog_name="ostr-ray")
