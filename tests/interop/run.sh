#!/usr/bin/env bash
# Interoperability: start a real gateway on a throwaway PKI, run the Python partner
# (jwcrypto + requests, in a virtualenv this script creates) against it, parse every
# certificate the dev PKI wrote with Python cryptography, scan the TLS listener with sslyze
# (Mozilla intermediate), stop the gateway.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${REFEX_BIN:-$repo/target/debug/refex}"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

venv="${INTEROP_VENV:-$repo/target/interop-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check jwcrypto requests
# sslyze pins its own cryptography: a virtualenv of its own.
scan_venv="${TLS_SCAN_VENV:-$repo/target/tls-scan-venv}"
if [ ! -x "$scan_venv/bin/python" ]; then
  python3 -m venv "$scan_venv"
fi
"$scan_venv/bin/pip" install --quiet --disable-pip-version-check 'sslyze>=6,<7'

ln -s "$repo/partners" "$work/partners"
ln -s "$repo/schemas" "$work/schemas"
# shellcheck source=tests/interop/gateway.sh
. "$repo/tests/interop/gateway.sh"
start_gateway "$bin" "$work"
"$venv/bin/python" "$repo/tests/interop/partner.py" --gateway "https://localhost:$api" --admin "http://$admin" \
  --pki "$work/certs/dev" --examples "$repo/schemas/examples"
# Every certificate and CRL the dev PKI wrote, through a strict independent DER parser.
"$venv/bin/python" "$repo/tests/interop/strict_der.py" "$work/certs/dev"
# A TLS scan with a partner's client certificate: Mozilla "intermediate", no tool error.
"$scan_venv/bin/python" -W ignore "$repo/tests/interop/tls_scan.py" --port "$api" --pki "$work/certs/dev"
# The API against its own description, by an outside fuzzer (a gateway of its own).
bash "$repo/tests/interop/api_fuzz.sh" "$bin"
