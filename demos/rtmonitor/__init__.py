"""Live CPU and memory of the gunicorn workers and the machine, one sampler for all: see app.py."""
