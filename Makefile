# Two set-up commands for a fresh machine (see README):
#   make train   creates .venv if there is none, installs, trains rsa_tiny on the generated motion videos
#   make test    creates .venv if there is none, installs, runs the fast test suite
# Extra arguments: make train ARGS="model=tsn_tiny trainer.max_epochs=5"; make test PYTEST_ARGS="-k rsa"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed only when the environment has no torch yet, so a user's own (CUDA) build is kept.
# On the reference machine this is the CPU build that lies on disk.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# the tested versions of every other package on the reference platform (see the file); CONSTRAINTS= installs unpinned
CONSTRAINTS ?= constraints.txt
CONSTRAINT_ARGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train eval test test-all lint format clean-data constraints

$(PY):
	$(PYTHON) -m venv $(VENV)

# FFmpeg's shared libraries, which the optional torchcodec backend (data/backend=torchcodec) loads: Debian 12's
# FFmpeg 5.1 (torchcodec 0.13 loads FFmpeg 4 to 8; other releases name them otherwise: FFMPEG_LIBS="...").
# Installed with apt-get when missing and apt-get is usable (root, or sudo without a password); else one line says
# the backend will be unavailable, and the install goes on (decord, the default backend, does not need them).
FFMPEG_LIBS ?= libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8
define INSTALL_FFMPEG_LIBS
missing=$$(for lib in $(FFMPEG_LIBS); do \
	dpkg-query -W -f='$${Status}' $$lib 2>/dev/null | grep -q 'ok installed' || printf '%s ' $$lib; done); \
[ -z "$$missing" ] && exit 0; \
if [ "$$(id -u)" = 0 ]; then as_root=""; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=no; fi; \
apt_install="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"; \
if [ "$$as_root" != no ] && command -v apt-get >/dev/null 2>&1 \
	&& { $$as_root $$apt_install $$missing >/dev/null 2>&1 \
	|| { $$as_root apt-get update -q >/dev/null 2>&1 && $$as_root $$apt_install $$missing >/dev/null 2>&1; }; }; then \
	echo "installed FFmpeg's shared libraries for the torchcodec backend:" $$missing; \
else \
	echo "FFmpeg's shared libraries ($${missing% }) could not be installed with apt-get: the torchcodec backend will be unavailable (decord, the default, works)"; \
fi
endef

# The packages are installed by uv (from PyPI, into this venv: a fresh .venv in 1.1 min instead of 2.0 here), falling
# back to pip when uv cannot be installed; torch comes first, by pip (which finds the local CPU build), byte-compiled on every core
# (compileall reports torch's files written for newer Pythons as errors, which pip's own compilation skips: ignored).
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	@$(INSTALL_FFMPEG_LIBS)
	$(PY) -c "import torch" 2>/dev/null || { $(PY) -m pip install --quiet --no-compile "$(TORCH_SPEC)" \
		&& { $(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch" \
		>/dev/null || true; }; }
	{ $(PY) -m pip install --quiet uv \
		&& $(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode $(CONSTRAINT_ARGS) -e ".[dev,torchcodec]"; } \
		|| $(PY) -m pip install --quiet $(CONSTRAINT_ARGS) -e ".[dev,torchcodec]"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) train.py $(ARGS)

eval: install
	$(PY) eval.py $(ARGS)

# the suite runs in TEST_WORKERS processes (pytest-xdist), a test file per process at a time (its module fixtures
# made once); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
TEST_DIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: install
	$(PY) -m pytest -q $(TEST_DIST) $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q -m "" $(TEST_DIST) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rsa_lightning tests benchmarks train.py eval.py
	$(VENV)/bin/ruff format --check rsa_lightning tests benchmarks train.py eval.py

format: install
	$(VENV)/bin/ruff check --fix rsa_lightning tests benchmarks train.py eval.py
	$(VENV)/bin/ruff format rsa_lightning tests benchmarks train.py eval.py

# rewrite constraints.txt from this .venv (after a green CI run with the new versions), keeping its header
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable \
		| grep -v -i -E '^(torch|uv|pip|setuptools|wheel)==' \
		| sed 's/$$/ ; python_version == "3.11" and sys_platform == "linux"/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean-data:
	rm -rf data/synthetic
