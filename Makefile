# The two commands of README.rst: `make demo` runs the chat demo on 4 workers,
# `make test` installs everything and passes the tests (what CI runs).
PYTHON ?= python3
BIND ?= 127.0.0.1:8000
DEMO ?= chat  # or rtmonitor, shortener

.PHONY: install demo test lint fuzz bench

install:
	$(PYTHON) -m pip install --quiet -e ".[test]"
	npm ci --no-audit --no-fund --loglevel=error
	# Debian packages the tests use: a redis-server they start on free ports,
	# headless Chromium for the demos' browser tests.
	command -v redis-server >/dev/null && command -v chromium >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server chromium; }

demo: install
	$(PYTHON) -m gunicorn -c example_confs/barrel_conf.py -w 4 -b $(BIND) demos.$(strip $(DEMO)).app:wsgi

lint:
	ruff check .
	mypy

FUZZ_LOG ?= /tmp/barrel-fuzz-wire.log

# The wire decoder under atheris (libFuzzer) for 15 s; a crash fails the run.
fuzz:
	$(PYTHON) tests/fuzz_wire_atheris.py -max_total_time=15 -print_final_stats=1 >$(FUZZ_LOG) 2>&1 \
		|| { tail -n 40 $(FUZZ_LOG); exit 1; }
	tail -n 2 $(FUZZ_LOG)

test: install lint fuzz
	$(PYTHON) -m pytest

# Benchmarks (not run by CI): polling routing, the store, then broadcasts against the
# peers (python-socketio, Node socket.io); tables in bench/results/.
bench: install
	$(PYTHON) -m bench
	$(PYTHON) -m bench.store
	$(PYTHON) -m bench.peers
