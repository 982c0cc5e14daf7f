#!/usr/bin/env bash
# The CLI's JUnit output is validated against its XML schema by libxml2 (cgo, through
# github.com/terminalstatic/go-xsd-validate) in the unit tests. Debian's libxml2-dev is on
# the machines this project builds on; where it is not, install it (as root) or say how.
set -euo pipefail
if pkg-config --exists libxml-2.0 2>/dev/null; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "installing libxml2-dev and pkg-config (the JUnit schema test needs libxml2)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q libxml2-dev pkg-config >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libxml2-dev pkg-config >&2; }
	exit 0
fi
echo "make test needs libxml2's headers (the JUnit schema test): install libxml2-dev and pkg-config (Debian, Ubuntu) or libxml2-devel (Fedora)" >&2
exit 1
