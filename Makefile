# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[cpu,export,examples,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

bench: $(STAMP)
	$(PY) bench/train_speed.py --out results/train_speed.json
	$(PY) bench/export_size_latency.py --out results/export_size_latency.json
	$(PY) bench/firmware.py --out results/firmware.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
