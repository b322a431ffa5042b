# Sourced by run.sh and api_fuzz.sh: starts a gateway in development mode from WORK (which
# holds partners/ and schemas/), on ports the system picks, and waits until it is ready.
# Sets `pid`, `api` (the API port) and `admin` (the admin listener's host:port).
start_gateway() {
  local bin="$1" work="$2"
  printf 'mode = "development"\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n' > "$work/refex.toml"
  (cd "$work" && exec "$bin" serve --data-dir data 2> "$work/serve.log") &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "ready to accept" "$work/serve.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
  done
  local ready
  ready="$(grep "ready to accept" "$work/serve.log")"
  api="$(printf '%s' "$ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api"].rsplit(":",1)[1])')"
  admin="$(printf '%s' "$ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin"])')"
}
