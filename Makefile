# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: this picks the CPU build; a looser pin pulls several GB of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,tflite]'
	touch $@

# Real test peers: OpenSSH's sshd, Debian's adb client, and the shells phones have (mksh, busybox ash).
system-deps:
	@if ! command -v /usr/sbin/sshd >/dev/null || ! command -v adb >/dev/null || ! command -v mksh >/dev/null \
		|| ! command -v busybox >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server adb mksh busybox \
			>/dev/null; \
	fi

# Two workers on the two cores, then the tests marked serial (timing- or core-bound) with the machine to themselves;
# both parts always run, and either failing fails the target. Work stealing: a worker that runs out takes tests
# queued behind a long one on the other (8:57 against 9:49 for the parallel part, 2026-12-06).
test: $(STAMP) system-deps
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not serial"; parallel=$$?; \
	$(PY) -m pytest -q -m serial; serial=$$?; \
	test $$parallel -eq 0 && test $$serial -eq 0

# The fuzzers at full strength: 10,000 inputs per reader (make test runs 1,000).
fuzz: $(STAMP)
	OFA_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q -n 2 tests/test_fuzz.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(PY) -m profiler.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
