"""Demo applications for gunicorn_barrel (run from the repository root)."""
