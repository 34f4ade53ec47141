# The two commands of README.rst: `make demo` runs the chat demo on 4 workers,
# `make test` installs everything and passes the tests (what CI runs).
PYTHON ?= python3
BIND ?= 127.0.0.1:8000
DEMO ?= chat  # or rtmonitor, shortener

.PHONY: install test-tools autobahn-tools demo test lint fuzz matrix bench

# What the demos need: the package (with the demos' Python packages) and the browser libraries.
install:
	$(PYTHON) -m pip install --quiet -e ".[test]"
	npm ci --no-audit --no-fund --loglevel=error

# Debian packages the tests and benchmarks use (not the demos): a redis-server
# they start on free ports, headless Chromium for the demos' browser tests, a
# Prometheus server the metrics tests start on a free port (the package's own
# service, where systemd starts it, is not used).
test-tools:
	command -v redis-server >/dev/null && command -v chromium >/dev/null && command -v prometheus >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server chromium && \
		  apt-get install -y -qq --no-install-recommends prometheus; }

# Autobahn|Testsuite's wstest (tests/test_autobahn.py), Python 2 code: a virtualenv
# of pyenv's 2.7.18 with the pins of ci/autobahn-requirements.txt, cached in
# ~/.cache/gunicorn-barrel-autobahn and rebuilt when that file changes.
autobahn-tools:
	$(PYTHON) -m ci.autobahn_tools

demo: install
	$(PYTHON) -m gunicorn -c example_confs/barrel_conf.py -w 4 -b $(BIND) demos.$(strip $(DEMO)).app:wsgi

lint:
	ruff check .
	mypy

# The wire decoder under atheris (libFuzzer) for 15 s; a crash fails the run
# (its log is shown, then removed either way).
fuzz:
	@log=$$(mktemp); \
	$(PYTHON) tests/fuzz_wire_atheris.py -max_total_time=15 -print_final_stats=1 >$$log 2>&1 \
		|| { tail -n 40 $$log; rm -f $$log; exit 1; }; \
	tail -n 2 $$log; rm -f $$log

test: install test-tools autobahn-tools lint fuzz
	$(PYTHON) -m pytest

# The compatibility matrix (ci/matrix.py): representative tests in virtualenvs
# of the oldest and the newest supported versions (ci/constraints-*.txt), on the
# oldest and the newest Python setup.cfg declares (from pyenv). Needs `make install`
# first (npm packages); the virtualenvs are cached in ~/.cache/gunicorn-barrel-matrix.
matrix:
	$(PYTHON) -m ci.matrix

# Benchmarks (not run by CI): polling routing, the store, then broadcasts against the
# peers (python-socketio, Node socket.io); tables in bench/results/.
bench: install test-tools
	$(PYTHON) -m bench
	$(PYTHON) -m bench.store
	$(PYTHON) -m bench.peers
	$(PYTHON) -m bench.redis_bus
