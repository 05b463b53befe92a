# bpftune-rs top-level Makefile: wraps cargo and keeps the original's install
# variables (DESTDIR, prefix, libdir) and paths.
#
#   make          build everything (release)
#   make run      install missing build packages, build, run the daemon in
#                 the foreground with the freshly built tuners
#   make test     install missing build/test packages, build, run every test
#                 (fmt-check, clippy, unit and integration tests; as root)
#   make unit-test         the crates' unit tests (any user, no root)
#   make integration-test  the root integration tests in tests/tests
#   make fmt-check, make clippy
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
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
RELEASE_DIR := $(TARGET_DIR)/release
# Root-owned staging directory holding the freshly built tuners under their
# installed names (the daemon refuses plugins from untrusted directories).
STAGE_DIR := $(TARGET_DIR)/plugins

BUILD_PACKAGES := clang llvm libelf-dev zlib1g-dev pkg-config make gcc bpftool
# chromium renders the -q report page and python3-prometheus-client parses the
# metrics text (OpenMetrics and 0.0.4) in tests/tests/metrics.rs.
TEST_PACKAGES := iproute2 iperf3 nftables ethtool netcat-openbsd python3 procps lsof psmisc python3-docutils init-system-helpers sysvinit-utils systemd-container debootstrap \
	chromium python3-prometheus-client

export BPFTUNE_PREFIX := $(prefix)
export BPFTUNE_LIBDIR := $(libdir)

.PHONY: all build deps test-deps stage run test unit-test integration-test install uninstall clean fmt-check clippy man

all: build

# Install what is missing (Debian/Ubuntu); a no-op when everything is there.
deps:
	@./scripts/install-deps.sh $(BUILD_PACKAGES)

test-deps: deps
	@./scripts/install-deps.sh $(TEST_PACKAGES) $(PKG_TEST_PACKAGES)

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

FMT_CHECK = $(CARGO) fmt --all -- --check
CLIPPY = $(CARGO) clippy --workspace --all-targets --release $(CARGO_FLAGS) -- -D warnings
SKIP_LOG := $(RELEASE_DIR)/test-skips.log

# Everything, as root: format, lints, unit and integration tests; ends with
# the count and list of skipped tests (0 as root on a full kernel).
test: test-deps stage
	$(FMT_CHECK)
	$(CLIPPY)
	@rm -f $(SKIP_LOG)
	$(CARGO) test --workspace --release $(CARGO_FLAGS) -- --test-threads=1
	@./scripts/report-skips.sh $(SKIP_LOG)

fmt-check:
	$(FMT_CHECK)

clippy:
	$(CLIPPY)

# The crates' unit tests: no root, no BPF-capable kernel, no packages
# installed (the bpftune-tests crate, which holds the integration tests, is
# left out). Any user can run it: when $(TARGET_DIR) is not writable (a
# root-owned build tree), cargo builds in UNIT_TARGET_DIR instead, a
# per-user directory under $$TMPDIR by default.
UNIT_TARGET_DIR ?= $(shell if [ -w '$(TARGET_DIR)' ] || { [ ! -e '$(TARGET_DIR)' ] && [ -w '$(CURDIR)' ]; }; \
	then echo '$(TARGET_DIR)'; else echo "$${TMPDIR:-/tmp}/bpftune-unit-$$(id -u)"; fi)
unit-test:
	CARGO_TARGET_DIR=$(UNIT_TARGET_DIR) $(CARGO) test --workspace --exclude bpftune-tests --release $(CARGO_FLAGS)

# The integration tests (tests/tests/*.rs), as root: real BPF on this
# kernel, network namespaces, host sysctls restored afterwards. As another
# user every test that needs root skips with its reason (counted below).
integration-test: test-deps stage
	@rm -f $(SKIP_LOG)
	$(CARGO) test --release -p bpftune-tests $(CARGO_FLAGS) -- --test-threads=1
	@./scripts/report-skips.sh $(SKIP_LOG)

# Debian's 5.10, 6.1 and 6.12 kernels booted in QEMU with virtme-ng (no KVM
# needed), and the running kernel: bpftune -S, a 20 s run with every tuner
# and the integration tests on each; table in docs/kernels.md. Installs
# qemu, kmod, busybox and virtme-ng; kernels cached in /var/cache/bpftune-kernels.
# KERNELS="5.10 6.1 6.12 host" selects; more knobs in scripts/test-kernels.sh.
.PHONY: test-kernels
test-kernels: test-deps stage
	$(CARGO) test --workspace --release --no-run
	CARGO_TARGET_DIR=$(TARGET_DIR) ./scripts/test-kernels.sh

# ---------------------------------------------------------------------------
# Install, man pages and packages (see docs/README.md, "Packaging").
#
#   make install    [DESTDIR=] [prefix=/usr] [libdir=lib64] [WITH_OPENRC=0|1]
#                   [WITH_SYSV=0|1] [NOSTRIP=1]
#                   Installs stripped binaries (about 12 MB instead of 126:
#                   the release build keeps debug info for backtraces and
#                   perf); NOSTRIP=1 installs them as built, for packagers
#                   whose tools split the debug info into a debug package
#                   (debian/rules: dh_strip makes bpftune-dbgsym).
#   make uninstall  (same variables): removes exactly what install put there
#   make install-devel / uninstall-devel: the tuner SDK (bpftune-devel)
#   make man        build docs/*.rst into $(MAN_BUILD_DIR)/*.8 (rst2man)
#   make pkg        RPMs (bpftune, bpftune-devel) in $(RPM_TOPDIR)/RPMS
#   make deb        a .deb (libdir=lib) in $(DEB_OUT_DIR)
#
# install uses the release binaries `make build` made; NOBUILD=1 skips
# building them (packaging, when they are already there).

datadir ?= $(prefix)/share
# Everything before /usr in the prefix, then /etc (/usr and /usr/local: /etc).
etcdir ?= $(shell printf '%s' '$(prefix)' | sed 's|/usr.*$$||')/etc
# Service definitions: the systemd unit always (inert without systemd); the
# OpenRC script where openrc-run exists, else the LSB SysV init script that
# `service bpftune start` runs on machines without systemd as PID 1. Both are
# <etc>/init.d/bpftune, so at most one; packagers set both explicitly.
ifeq ($(origin WITH_OPENRC),undefined)
WITH_OPENRC := $(if $(or $(shell command -v openrc-run 2>/dev/null),$(wildcard /sbin/openrc-run /usr/sbin/openrc-run)),1,0)
endif
WITH_SYSV ?= $(if $(filter 1,$(WITH_OPENRC)),0,1)
# The daemon binary to install (make deb installs one built with libdir=lib).
DAEMON_BIN ?= $(RELEASE_DIR)/bpftune
# Plugin SDK for out-of-tree tuners: the interface (bpftune-abi), the SDK
# (bpftune-sdk) and the BPF build helper (bpf-common); never the daemon.
SDK_DIR := $(datadir)/bpftune/sdk
SDK_CRATES := bpftune-abi bpftune-sdk bpf-common

RST2MAN ?= rst2man
RST2MAN_FLAGS ?= --halt=warning
MAN_BUILD_DIR := $(TARGET_DIR)/man
MAN_NAMES := $(patsubst docs/%.rst,%,$(wildcard docs/*.rst))
MAN_PAGES := $(MAN_NAMES:%=$(MAN_BUILD_DIR)/%.8)
GEN_DIR := $(TARGET_DIR)/packaging

VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
PKG_PACKAGES := rpm cpio
# What the packaging tests (tests/tests/packaging.rs) use besides.
PKG_TEST_PACKAGES := $(PKG_PACKAGES) python3-docutils man-db groff-base systemd dpkg-dev
RPM_TOPDIR ?= $(TARGET_DIR)/rpmbuild
DEB_OUT_DIR ?= $(TARGET_DIR)/deb
# Separate cargo target dir for the daemon built with libdir=lib for the .deb
# (the plugin dir is compiled in), so target/release keeps the lib64 build.
DEB_CARGO_DIR ?= $(TARGET_DIR)/deb-cargo
DEB_ARCH = $(shell dpkg --print-architecture)
STRIP ?= strip

.PHONY: install-devel uninstall-devel man-deps pkg-deps pkg deb

pkg-deps:
	@./scripts/install-deps.sh $(PKG_TEST_PACKAGES)

man: $(MAN_PAGES)

man-deps:
	@command -v $(RST2MAN) >/dev/null || ./scripts/install-deps.sh python3-docutils

$(MAN_BUILD_DIR)/%.8: docs/%.rst | man-deps
	@install -d -m 0755 $(MAN_BUILD_DIR)
	$(RST2MAN) $(RST2MAN_FLAGS) $< $@.tmp && mv $@.tmp $@

install: $(if $(NOBUILD),,build man)
	@if [ "$(WITH_OPENRC)" = 1 ] && [ "$(WITH_SYSV)" = 1 ]; then \
		echo "WITH_OPENRC=1 and WITH_SYSV=1 both install <etc>/init.d/bpftune: choose one" >&2; exit 1; fi
	install -d -m 0755 $(DESTDIR)$(sbindir) $(DESTDIR)$(PLUGIN_DIR) $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(unitdir)
	install -m 0755 $(DAEMON_BIN) $(DESTDIR)$(sbindir)/bpftune
	@for t in $(TUNERS); do \
		echo "install -m 0644 $(RELEASE_DIR)/lib$${t}_tuner.so $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so"; \
		install -m 0644 $(RELEASE_DIR)/lib$${t}_tuner.so $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so || exit 1; \
	done
ifneq ($(NOSTRIP),1)
	$(STRIP) --strip-all $(DESTDIR)$(sbindir)/bpftune
	$(STRIP) --strip-unneeded $(TUNERS:%=$(DESTDIR)$(PLUGIN_DIR)/%_tuner.so)
endif
	install -m 0644 $(MAN_PAGES) $(DESTDIR)$(mandir)/man8/
	@install -d -m 0755 $(GEN_DIR)
	sed 's|/usr/sbin/bpftune|$(sbindir)/bpftune|' packaging/bpftune.service > $(GEN_DIR)/bpftune.service
	install -m 0644 $(GEN_DIR)/bpftune.service $(DESTDIR)$(unitdir)/bpftune.service
ifeq ($(WITH_OPENRC),1)
	install -d -m 0755 $(DESTDIR)$(etcdir)/init.d $(DESTDIR)$(etcdir)/conf.d
	sed 's|/usr/sbin/bpftune|$(sbindir)/bpftune|' packaging/bpftune.initd > $(GEN_DIR)/bpftune.initd
	install -m 0755 $(GEN_DIR)/bpftune.initd $(DESTDIR)$(etcdir)/init.d/bpftune
	install -m 0644 packaging/bpftune.confd $(DESTDIR)$(etcdir)/conf.d/bpftune
endif
ifeq ($(WITH_SYSV),1)
	install -d -m 0755 $(DESTDIR)$(etcdir)/init.d
	sed 's|/usr/sbin/bpftune|$(sbindir)/bpftune|' packaging/bpftune.sysv > $(GEN_DIR)/bpftune.sysv
	install -m 0755 $(GEN_DIR)/bpftune.sysv $(DESTDIR)$(etcdir)/init.d/bpftune
endif

uninstall:
	rm -f $(DESTDIR)$(sbindir)/bpftune
	@for t in $(TUNERS); do echo "rm -f $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so"; rm -f $(DESTDIR)$(PLUGIN_DIR)/$${t}_tuner.so; done
	-rmdir $(DESTDIR)$(PLUGIN_DIR) 2>/dev/null
	rm -f $(MAN_NAMES:%=$(DESTDIR)$(mandir)/man8/%.8)
	rm -f $(DESTDIR)$(unitdir)/bpftune.service
ifeq ($(WITH_OPENRC),1)
	rm -f $(DESTDIR)$(etcdir)/init.d/bpftune $(DESTDIR)$(etcdir)/conf.d/bpftune
endif
ifeq ($(WITH_SYSV),1)
	rm -f $(DESTDIR)$(etcdir)/init.d/bpftune
endif

# The SDK is a small cargo workspace of its own (the crates inherit version,
# edition and dependencies from it); an out-of-tree tuner depends on
# $(SDK_DIR)/bpftune-sdk and, in build-dependencies, $(SDK_DIR)/bpf-common.
install-devel:
	@rm -rf $(GEN_DIR)/sdk && install -d -m 0755 $(GEN_DIR)/sdk
	tar -cf - --exclude=target $(SDK_CRATES) | tar -xf - -C $(GEN_DIR)/sdk
	sed '/^members *= *\[/,/\]/c\members = [$(foreach c,$(SDK_CRATES),"$(c)",)]' Cargo.toml > $(GEN_DIR)/sdk/Cargo.toml
	install -m 0644 Cargo.lock packaging/sdk-README.md $(GEN_DIR)/sdk/
	@if [ -d sample_tuner ]; then tar -cf - --exclude=target sample_tuner | tar -xf - -C $(GEN_DIR)/sdk; fi
	install -d -m 0755 $(DESTDIR)$(SDK_DIR)
	cp -R $(GEN_DIR)/sdk/. $(DESTDIR)$(SDK_DIR)/
	mv $(DESTDIR)$(SDK_DIR)/sdk-README.md $(DESTDIR)$(SDK_DIR)/README.md
	find $(DESTDIR)$(SDK_DIR) -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +

uninstall-devel:
	rm -rf $(DESTDIR)$(SDK_DIR)
	-rmdir $(DESTDIR)$(datadir)/bpftune 2>/dev/null

# RPMs on this (Debian) machine: rpmbuild packages the release binaries and
# man pages built here (--with prebuilt; see buildrpm/bpftune.spec), and
# --nodeps because the BuildRequires are RPM package names no Debian rpm
# database has. On an RPM distribution, `rpmbuild -ba buildrpm/bpftune.spec`
# with the source tarball builds from source instead.
pkg:
	@./scripts/install-deps.sh $(PKG_PACKAGES)
	$(MAKE) build man prefix=/usr libdir=$$(rpm --eval '%{_lib}')
	rm -rf $(RPM_TOPDIR)
	install -d -m 0755 $(RPM_TOPDIR)/SOURCES $(RPM_TOPDIR)/SPECS $(RPM_TOPDIR)/BUILD $(RPM_TOPDIR)/RPMS $(RPM_TOPDIR)/SRPMS
	tar -czf $(RPM_TOPDIR)/SOURCES/bpftune-$(VERSION).tar.gz --exclude=target --exclude=./.git \
		--exclude='./debian/bpftune' --exclude='./debian/.debhelper' --transform 's|^\.|bpftune-$(VERSION)|' .
	tar -czf $(RPM_TOPDIR)/SOURCES/bpftune-$(VERSION)-prebuilt.tar.gz -C $(TARGET_DIR) --transform 's|^|target/|' \
		release/bpftune $(TUNERS:%=release/lib%_tuner.so) $(MAN_NAMES:%=man/%.8)
	cp buildrpm/bpftune.spec $(RPM_TOPDIR)/SPECS/
	rpmbuild -bb --nodeps --with prebuilt --define '_topdir $(RPM_TOPDIR)' \
		--define 'bpftune_version $(VERSION)' $(RPM_TOPDIR)/SPECS/bpftune.spec
	@ls -1 $(RPM_TOPDIR)/RPMS/*/*.rpm

# A .deb staged with `make install` (libdir=lib like Debian's bpftune, the
# unit and the SysV init script, no OpenRC files) and built with dpkg-deb;
# maintainer scripts and conffiles in packaging/deb.
# debian/ is the dpkg-buildpackage equivalent.
deb: build man
	CARGO_TARGET_DIR=$(DEB_CARGO_DIR) BPFTUNE_PREFIX=/usr BPFTUNE_LIBDIR=lib \
		$(CARGO) build --release -p bpftune-daemon $(CARGO_FLAGS)
	rm -rf $(DEB_OUT_DIR) && install -d -m 0755 $(DEB_OUT_DIR)/root/DEBIAN
	$(MAKE) install NOBUILD=1 DESTDIR=$(DEB_OUT_DIR)/root prefix=/usr libdir=lib WITH_OPENRC=0 WITH_SYSV=1 \
		DAEMON_BIN=$(DEB_CARGO_DIR)/release/bpftune
	$(STRIP) --strip-unneeded --remove-section=.comment --remove-section=.note \
		$(DEB_OUT_DIR)/root/usr/sbin/bpftune $(DEB_OUT_DIR)/root/usr/lib/bpftune/*_tuner.so
	install -d -m 0755 $(DEB_OUT_DIR)/root/usr/share/doc/bpftune
	install -m 0644 debian/copyright $(DEB_OUT_DIR)/root/usr/share/doc/bpftune/copyright
	gzip -9n < debian/changelog > $(DEB_OUT_DIR)/root/usr/share/doc/bpftune/changelog.Debian.gz
	gzip -9n < CHANGELOG.md > $(DEB_OUT_DIR)/root/usr/share/doc/bpftune/changelog.gz
	install -m 0644 docs/README.md $(DEB_OUT_DIR)/root/usr/share/doc/bpftune/README.md
	gzip -9nf $(DEB_OUT_DIR)/root/usr/share/man/man8/*.8
	install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(DEB_OUT_DIR)/root/DEBIAN/
	install -m 0644 packaging/deb/conffiles $(DEB_OUT_DIR)/root/DEBIAN/
	sed -e 's/@VERSION@/$(VERSION)-1/' -e 's/@ARCH@/$(DEB_ARCH)/' \
		-e "s/@SIZE@/$$(du -sk --exclude=DEBIAN $(DEB_OUT_DIR)/root | cut -f1)/" \
		-e "s/@DEPENDS@/$$(packaging/deb/shlibdeps.sh $(DEB_OUT_DIR)/root)/" \
		packaging/deb/control > $(DEB_OUT_DIR)/root/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEB_OUT_DIR)/root $(DEB_OUT_DIR)/bpftune_$(VERSION)-1_$(DEB_ARCH).deb

# ---------------------------------------------------------------------------
# OCI image and its tests (README "Running in a container and on Kubernetes";
# deploy/kubernetes holds the DaemonSet).
#
#   make image       $(IMAGE_NAME):$(VERSION) (and :latest) in podman's root
#                    storage, built offline from the staged build: a scratch
#                    root file system with the daemon, the tuners and the
#                    libraries ldd names for them (scripts/build-image.sh),
#                    and its OCI archive $(IMAGE_DIR)/bpftune-$(VERSION).oci.tar
#   make test-image  tests/tests/image.rs: the image under podman (runc) with
#                    the minimal capabilities, tuning, -q from the host,
#                    rollback on stop, each capability taken away, and the
#                    Kubernetes manifests validated (kubernetes-validate from
#                    PyPI). `make test` runs them too (under a minute), so
#                    podman and runc are test packages.

IMAGE_NAME ?= localhost/bpftune
IMAGE_DIR ?= $(TARGET_DIR)/image
IMAGE_PACKAGES := podman runc

.PHONY: image image-deps test-image

image-deps:
	@./scripts/install-deps.sh $(IMAGE_PACKAGES)

test-deps: image-deps

image: image-deps stage
	./scripts/build-image.sh --release-dir $(RELEASE_DIR) --stage-dir $(STAGE_DIR) --out $(IMAGE_DIR) \
		--image $(IMAGE_NAME) --version $(VERSION)

test-image: test-deps stage
	$(CARGO) test --release -p bpftune-tests --test image -- --test-threads=1

clean:
	$(CARGO) clean
