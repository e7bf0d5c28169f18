#!/usr/bin/env bash
# Installs the Debian packages that tests exec (client tools, interop scripts).
# Run by `make test` before `go test`.
#
# As root, missing packages are installed with apt-get. Otherwise the missing
# ones are listed and we carry on: tests that need a tool skip without it, or
# fail when CI=true.
set -euo pipefail

# Space-separated Debian package names. mosquitto-clients: gateway/mqtt's
# TestMosquittoClients (mosquitto_pub/mosquitto_sub). python3-pika:
# gateway/amqp's TestPika (run with /usr/bin/python3).
APT_PACKAGES="mosquitto-clients python3-pika"

missing=()
for pkg in $APT_PACKAGES; do
	if ! dpkg -s "$pkg" >/dev/null 2>&1; then
		missing+=("$pkg")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-test-deps: not root, not installing missing packages: ${missing[*]}" >&2
	echo "install-test-deps: tests that need them will skip (or fail under CI=true)" >&2
	exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
	echo "install-test-deps: apt-get failed for: ${missing[*]}" >&2
	if [ "${CI:-}" = "true" ]; then
		exit 1
	fi
	echo "install-test-deps: continuing; tests that need them will skip" >&2
fi
