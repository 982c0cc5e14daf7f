#!/usr/bin/env bash
# Usage: hack/require-devel.sh PKG-CONFIG-NAME DEBIAN-PACKAGE FEDORA-PACKAGE WHY
#
# Makes sure a C library's headers are installed for a cgo build: libxml2 for the unit
# tests' JUnit schema check (github.com/terminalstatic/go-xsd-validate), libseccomp for runc,
# the node's container runtime (without it runc refuses every container the kubelet starts:
# "seccomp: config provided but seccomp not supported"). As root with apt-get, it installs
# the Debian package; otherwise it says what to install.
set -euo pipefail
pc=$1 deb=$2 fedora=$3 why=$4
if pkg-config --exists "$pc" 2>/dev/null; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "installing $deb and pkg-config ($why)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" pkg-config >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" pkg-config >&2; }
	exit 0
fi
echo "$why: install $deb and pkg-config (Debian, Ubuntu) or $fedora (Fedora)" >&2
exit 1
