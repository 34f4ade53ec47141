"""Chat rooms over several gunicorn workers: see app.py."""
