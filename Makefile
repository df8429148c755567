# vkimg — see README.md. All targets run on a Debian 12 machine as root.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
# Built templates and Debian bases shared between test runs.
export VKIMG_TEST_CACHE ?= /var/cache/vkimg-test
GOTEST_FLAGS ?= -count=1 -timeout 75m

.PHONY: all setup build lint test test-go test-mcp quickstart bench clean

all: build

setup:
	scripts/setup.sh

build:
	go build -trimpath -o bin/vkimg ./cmd/vkimg

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...

# The one test command (README, .ci/run): every Go test and the MCP server's.
test: lint test-go test-mcp

test-go:
	go test $(GOTEST_FLAGS) ./...

test-mcp:
	cd mcp && npm test

# Set everything up, then build the stand-in template and boot it.
quickstart: setup build
	scripts/quickstart.sh

bench:
	bench/run.sh

clean:
	rm -rf bin
