# bpftune-rs top-level Makefile: wraps cargo and keeps the original's install
# variables (DESTDIR, prefix, libdir) and paths.
#
#   make          build everything (release)
#   make run      install missing build packages, build, run the daemon in
#                 the foreground with the freshly built tuners
#   make test     install missing build/test packages, build, run every test
#   make install  install daemon, tuners, man pages, unit file
#   make clean

SHELL := /bin/bash

prefix ?= /usr
libdir ?= lib64
sbindir ?= $(prefix)/sbin
mandir ?= $(prefix)/share/man
unitdir ?= $(prefix)/lib/systemd/system
DESTDIR ?=
CARGO ?= cargo
CARGO_FLAGS ?=

# Tuners built and installed, by crate directory under tuners/.
TUNERS := $(notdir $(wildcard tuners/*))
PLUGIN_DIR := $(prefix)/$(libdir)/bpftune
LOCAL_PLUGIN_DIR := $(prefix)/local/$(libdir)/bpftune
TARGET_DIR := $(CURDIR)/target
RELEASE_DIR := $(TARGET_DIR)/release
# Root-owned staging directory holding the freshly built tuners under their
# installed names (the daemon refuses plugins from untrusted directories).
STAGE_DIR := $(TARGET_DIR)/plugins

BUILD_PACKAGES := clang llvm libelf-dev zlib1g-dev pkg-config make gcc bpftool
TEST_PACKAGES := iproute2 iperf3 nftables ethtool netcat-openbsd python3 procps lsof psmisc python3-docutils

export BPFTUNE_PREFIX := $(prefix)
export BPFTUNE_LIBDIR := $(libdir)

.PHONY: all build deps test-deps stage run test unit-test integration-test install uninstall clean fmt-check clippy man

all: build

# Install what is missing (Debian/Ubuntu); a no-op when everything is there.
deps:
	@./scripts/install-deps.sh $(BUILD_PACKAGES)

test-deps: deps
	@./scripts/install-deps.sh $(TEST_PACKAGES)

build:
	$(CARGO) build --release --workspace $(CARGO_FLAGS)

stage: build
	@install -d -m 0755 $(STAGE_DIR)
	@for t in $(TUNERS); do \
		install -m 0644 $(RELEASE_DIR)/lib$${t}_tuner.so $(STAGE_DIR)/$${t}_tuner.so || exit 1; \
	done
	@echo "tuners staged in $(STAGE_DIR)"

run: deps stage
	$(RELEASE_DIR)/bpftune -s --system-libdir $(STAGE_DIR) -l $(STAGE_DIR) $(BPFTUNE_ARGS)

test: test-deps stage
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	$(CARGO) test --workspace --release -- --test-threads=1

install: build
	install -d -m 0755 $(DESTDIR)$(sbindir) $(DESTDIR)$(PLUGIN_DIR)
	install -m 0755 $(RELEASE_DIR)/bpftune $(DESTDIR)$(sbindir)/bpftune
	@for t in $(TUNERS); do \
		install -m 0644 $(RELEASE_DIR)/lib$${t}_tuner.so $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(sbindir)/bpftune
	@for t in $(TUNERS); do rm -f $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so; done
	-rmdir $(DESTDIR)$(PLUGIN_DIR) 2>/dev/null

clean:
	$(CARGO) clean
