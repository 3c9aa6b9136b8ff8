# Two commands do all set-up on a fresh machine with Python 3.11 and make:
#   make book   – create .venv, install, execute every notebook (quick profile), build _build/html
#   make test   – unit tests, every notebook under the smoke profile, a book build with -W
# Both reuse .venv; it is reinstalled only when pyproject.toml or constraints.txt change.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: book test install clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[dev]"
	touch $(STAMP)

book: $(STAMP)
	$(PY) -m edrepro book --profile quick

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest

clean:
	rm -rf _build figures

distclean: clean
	rm -rf $(VENV) runs
