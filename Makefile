# Ferry: `make demo` and `make test` work on a fresh Debian machine (run as root, or with sudo).
SHELL := /bin/bash
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# Debian packages the project needs: the netfilter libraries and tools for the data planes and their
# tests, iproute2 for network namespaces, procps for the demo.
DEBIAN_PACKAGES := libnftnl-dev libmnl-dev pkg-config nftables iproute2 procps openssl curl python3-prometheus-client
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps build release test validator install demo bench format clean

all: build

## deps: install the Debian packages Ferry needs (idempotent: only what is missing)
deps:
	@missing=""; \
	for package in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "make: '$(SWIFT)' not found: install the Swift 6 toolchain and put it on PATH" >&2; exit 1; }

## build: debug build of the ferry binary (.build/debug/ferry)
build: deps
	$(SWIFT) build

## release: optimised build (.build/release/ferry)
release: deps
	$(SWIFT) build -c release

## test: build and run every test (root-only tests skip with a message unless root; under CI=true they must run)
test: deps validator
	$(SWIFT) build --build-tests
	$(SWIFT) test

## validator: kubernetes-validate from PyPI, which checks deploy/kubernetes against the API's schemas offline
validator:
	@command -v kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate || \
	  echo "make: kubernetes-validate could not be installed; the deployment manifests test will skip" >&2

## install: the release binary in $(PREFIX)/bin and the systemd unit (as root; then: systemctl enable --now ferry)
PREFIX ?= /usr/local
install: release
	install -D -m 0755 .build/release/ferry $(DESTDIR)$(PREFIX)/bin/ferry
	install -D -m 0644 deploy/systemd/ferry.service $(DESTDIR)/etc/systemd/system/ferry.service

## demo: build, then show Ferry reading the example manifests
demo: release
	scripts/demo.sh .build/release/ferry

## bench: the benchmarks (manifest loading; as root `ferry bench`, load balancing end to end against
## kube-proxy's ruleset, HAProxy and direct, for which it installs haproxy, iperf3, nginx-light and wrk)
bench: release
	.build/release/ferry bench load --sizes 10000,50000
	@if [ "$$(id -u)" -eq 0 ]; then \
	  $(MAKE) --no-print-directory DEBIAN_PACKAGES="haproxy iperf3 nginx-light wrk" deps && \
	  .build/release/ferry bench --report bench-report; \
	else echo "make bench: the load-balancing benchmark needs root (skipped)"; fi

## format: format the sources with the toolchain's swift-format
format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift


clean:
	rm -rf .build
