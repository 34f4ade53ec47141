"""``python -m gunicorn_barrel status ...``: the ``gunicorn-barrel`` command (``cli``)."""
from gunicorn_barrel.cli import console

console()
