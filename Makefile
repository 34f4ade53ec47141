# The two commands of README.rst: `make demo` runs the chat demo on 4 workers,
# `make test` installs everything and passes the tests (what CI runs).
PYTHON ?= python3
BIND ?= 127.0.0.1:8000

.PHONY: install demo test lint bench

install:
	$(PYTHON) -m pip install --quiet -e ".[test]"
	npm ci --no-audit --no-fund --loglevel=error

demo: install
	$(PYTHON) -m gunicorn -c example_confs/barrel_conf.py -w 4 -b $(BIND) demos.chat.app:wsgi

lint:
	ruff check .
	mypy

test: install lint
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m bench
