# Front door. `make run` and `make test` are the two commands (see README).
SHELL := /bin/bash
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= 2
ifeq ($(SANITIZE),1)
  BUILD := build-asan
  CMAKE_FLAGS += -DOMS_SANITIZE=ON
endif
ifneq ($(CI),)
  CMAKE_FLAGS += -DOMS_WERROR=ON
endif
export OMS_BUILD_DIR := $(abspath $(BUILD))

.PHONY: all deps build test unit integration run dev bench fuzz chaos lint format format-check clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

unit: build
	@cd $(BUILD) && ctest --no-tests=error --output-on-failure

integration: build
	@scripts/test-integration.sh

test: build
	@scripts/test.sh

run: build
	@scripts/run.sh

# make run, plus: a change under <service>/ rebuilds and restarts that service alone;
# under common/ or proto/, all five. Needs entr (make deps installs it).
dev: build
	@scripts/dev.sh

# Performance figures (never a pass/fail): QUICK=1 for a few-second smoke run.
bench: build
	@bench/run.sh

# libFuzzer targets (clang); FUZZ_SECONDS per target.
fuzz:
	@scripts/fuzz.sh

# Fault-injection run: kills services and restarts the broker under a steady load.
chaos: build
	@scripts/chaos.sh

# The same files format-check looks at: tracked, and new ones not yet added.
format:
	@clang-format -i $$(git ls-files --cached --others --exclude-standard '*.c' '*.h')

format-check:
	@scripts/lint.sh format

# shellcheck over every shell script + format-check; scripts/test.sh runs it first.
lint: deps
	@scripts/lint.sh

clean:
	rm -rf build build-asan
