#!/usr/bin/env bash
# The API against its own description: schemathesis (an outside fuzzer, from PyPI) reads
# GET /openapi.json and sends what it generates from it, valid and invalid, as each kind of
# caller the gateway has, and checks every answer against the document: no 5xx, only
# documented status codes and media types, every body valid against its schema, invalid
# input refused. Any failure fails the suite.
#
# Usage: api_fuzz.sh [REFEX_BINARY]   (default target/debug/refex; run.sh passes its own)
#
# It starts a gateway of its own on a
# throwaway PKI, with the sample partners given a person's quota a fuzzer cannot exhaust
# (a 429 proves nothing about the route behind it), and stops it at the end.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(realpath "${1:-$repo/target/debug/refex}")"
work="$(mktemp -d)"
pid=""
keep_log() { [ -f "$work/serve.log" ] && cp "$work/serve.log" "${TMPDIR:-/tmp}/api-fuzz-gateway.log"; }
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

cp -r "$repo/partners" "$work/partners"
for f in "$work"/partners/*.toml; do
  [ "$(basename "$f")" = agreements.toml ] && continue
  printf '\n[person_rate_quota]\nper_minute = 60000\nburst = 1000\n' >> "$f"
done
ln -s "$repo/schemas" "$work/schemas"
# shellcheck source=tests/interop/gateway.sh
. "$repo/tests/interop/gateway.sh"
start_gateway "$bin" "$work"
pki="$work/certs/dev"

# Something real to find: deliveries in imara's inbox, and a referral held for notts-police's
# leads, so that answers with data are checked too (the stateful phase follows the
# description's links from a listing to its items).
example="$repo/schemas/examples/child-sexual-abuse-support/police-referral.json"
send() {
  (cd "$work" && "$bin" send --as notts-police --gateway "https://localhost:$api" --pki certs/dev \
    --type child-sexual-abuse-support --to imara --file "$example" \
    --schedule1 para-18-safeguarding-children "$@" > /dev/null)
}
for n in 1 2 3; do send --sender-ref "FUZZ/$n"; done
send --sender-ref FUZZ/held --consent refused --override risk-of-significant-harm \
  --justification "a child at immediate risk"

venv="${API_FUZZ_VENV:-$repo/target/api-fuzz-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
fi
# One exact version: a new release's new checks must not turn CI red unannounced.
"$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 'jwcrypto==1.6.1'
# The gateway's public keys, for the hooks that seal real referrals (api_fuzz_hooks.py).
"$venv/bin/python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://$admin/.well-known/jwks.json" > "$work/gateway-jwks.json"

# Each caller's certificate: a sending and a receiving partner system, two designated
# safeguarding leads (reviews and the console), a hosted charity's practitioner (the hosted
# console), an auditor (proofs), a data protection officer (subject access) and a
# commissioner (aggregates).
callers=(
  "partners/notts-police/system"
  "partners/imara/system"
  "partners/notts-police/people/dsl-a"
  "partners/notts-police/people/dsl-b"
  "partners/imara/people/practitioner-1"
  "partners/notts-police/people/auditor-1"
  "partners/notts-police/people/dpo-1"
  "partners/mopac/people/analyst-1"
)
export PYTHONPATH="$repo/tests/interop${PYTHONPATH:+:$PYTHONPATH}"
export SCHEMATHESIS_HOOKS=api_fuzz_hooks
report="$(mktemp -d)"
status=0
for who in "${callers[@]}"; do
  echo "api fuzz as $who"
  # A partner's system also sends real referrals among the generated ones, and at least one
  # must be accepted: the fuzzer reaches the acceptance path, not only the envelope check.
  unset API_FUZZ_SENDER API_FUZZ_SENDER_KEYS API_FUZZ_GATEWAY_JWKS API_FUZZ_PAYLOAD API_FUZZ_ACCEPTED
  if [ "$who" = "partners/notts-police/system" ]; then
    export API_FUZZ_SENDER=notts-police
    export API_FUZZ_SENDER_KEYS="$pki/partners/notts-police/jwks.private.json"
    export API_FUZZ_GATEWAY_JWKS="$work/gateway-jwks.json"
    export API_FUZZ_PAYLOAD="$example"
    export API_FUZZ_ACCEPTED="$report/accepted.txt"
    : > "$API_FUZZ_ACCEPTED"
  fi
  # object_level_authorization and ignored_auth need a credential the fuzzer can remove or
  # swap, and a client certificate is neither: the access matrix (tests/it/access.rs) walks
  # every route for every principal instead.
  # From the temporary directory: its caches (.schemathesis/, .hypothesis/) go with it, and
  # a run is reproduced from the seed alone.
  fuzz() {
    (cd "$work" && "$venv/bin/schemathesis" --config-file "$repo/tests/interop/schemathesis.toml" \
      run "http://$admin/openapi.json" \
      --url "https://localhost:$api" \
      --request-cert "$pki/$who.pem" --request-cert-key "$pki/$who.key" \
      --tls-verify "$pki/ca.pem" \
      --checks all \
      --exclude-checks object_level_authorization,ignored_auth \
      --phases examples,coverage,fuzzing,stateful \
      --max-examples "${API_FUZZ_EXAMPLES:-20}" --seed 20261128 \
      --rate-limit 40/s --workers "$1" \
      --request-retries 1 \
      --generation-database none \
      --report junit --report-dir "$report" --no-color) 2>&1 | tee "$report/out.txt"
    return "${PIPESTATUS[0]}"
  }
  if ! fuzz 2; then
    # The fuzzer's own crash (a CPython "SystemError" inside schemathesis, seen once with two
    # workers) is not a finding about the gateway: run that caller again, on one worker. Any
    # failed check, or a second crash, fails the suite.
    if grep -q "Runtime Error" "$report/out.txt" && ! grep -qE "[0-9]+ failed" "$report/out.txt"; then
      echo "api fuzz as $who: the fuzzer itself crashed; running it again on one worker"
      fuzz 1 || status=1
    else
      status=1
    fi
  fi
  if [ -n "${API_FUZZ_ACCEPTED:-}" ]; then
    accepted=$(wc -l < "$API_FUZZ_ACCEPTED")
    echo "api fuzz as $who: $accepted real referrals accepted among the generated ones"
    [ "$accepted" -gt 0 ] || { echo "api fuzz: no real referral was accepted" >&2; status=1; }
  fi
done
rm -rf "$report"
if [ "$status" -ne 0 ]; then
  keep_log
  echo "api fuzz: failures above; the gateway's log is kept at ${TMPDIR:-/tmp}/api-fuzz-gateway.log" >&2
fi
exit "$status"
