"""URL shortener with a live visit map, on several gunicorn workers (see app.py)."""
