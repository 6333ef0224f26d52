#!/usr/bin/env bash
# Make the deployment's secrets — never committed, never in an image — in DIR (default deploy/secrets):
#
#   ca.pem ca.key                 the project's CA (`ecqa cloud init`); ca.key is never mounted: move it offline
#   server.pem server.key         the gateway, valid for localhost, 127.0.0.1 and `gateway` (its compose and k8s name)
#   aes.key                       the envelope key (gateway and UI)
#   edges/ui.*                    the UI's client certificate: it calls the gateway and dispatches to the workers
#   edges/probe.*                 the health checks' client certificate (gateway /healthz, worker /v1/health)
#   workers/edge-worker-N.*       one per edge worker (`ecqa edge init`), valid for `edge-worker-N` (compose) and
#                                 `edge-worker-N.edge-worker` (the k8s StatefulSet's pod behind its headless Service)
#   env/ECQA_REGISTRY_PASSWORD    Redis's password (the registry of a secure fleet needs one)
#   env/ECQA_CLOUD_BACKEND_API_KEY  vLLM's API key (`--api-key`), what the gateway sends it
#
#   deploy/init-secrets.sh [DIR] [--workers N]      (N: how many worker certificates, default 4 = the HPA's max)
#
# ecqa comes from $ECQA_BIN, else PATH, else .venv/bin/ecqa; with only the image at hand (DIR at the same path inside):
#   ECQA_BIN="docker run --rm -u $(id -u) -v $PWD:$PWD -w $PWD --entrypoint ecqa ecqa:0.1.0" deploy/init-secrets.sh
#
# The files are made readable (0644) inside a directory only its owner may enter (0700): compose mounts file
# secrets as bind mounts that keep the host file's owner and mode, and each container reads them as its own
# user; deploy/entrypoint.sh copies them to a private 0600 layout before the gateway and the workers start.
set -euo pipefail

dir="deploy/secrets"
workers=4
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "init-secrets.sh: unknown option $1 — see --help" >&2; exit 2 ;;
    *) dir="$1"; shift ;;
  esac
done
case "$workers" in ''|*[!0-9]*) echo "init-secrets.sh: --workers takes a number" >&2; exit 2 ;; esac

if [ -n "${ECQA_BIN:-}" ]; then read -r -a ecqa <<< "$ECQA_BIN"
elif command -v ecqa >/dev/null 2>&1; then ecqa=(ecqa)
elif [ -x .venv/bin/ecqa ]; then ecqa=(.venv/bin/ecqa)
else echo "init-secrets.sh: no ecqa — run \`make env\`, or set ECQA_BIN (see --help)" >&2; exit 2
fi

if [ -e "$dir/ca.pem" ]; then
  echo "init-secrets.sh: $dir already holds a CA — remove the folder to start over (old edges are then refused)" >&2
  exit 2
fi
mkdir -p "$dir"
chmod 0700 "$dir"

"${ecqa[@]}" cloud init --dir "$dir" --host gateway --edge ui --edge probe
for ((i = 0; i < workers; i++)); do
  "${ecqa[@]}" edge init --dir "$dir" --worker "edge-worker-$i" --host "edge-worker-$i" --host "edge-worker-$i.edge-worker"
done

mkdir -p "$dir/env"
for name in ECQA_REGISTRY_PASSWORD ECQA_CLOUD_BACKEND_API_KEY; do
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$dir/env/$name")
done

find "$dir" -type d -exec chmod 0700 {} +
find "$dir" -type f ! -name ca.key -exec chmod 0644 {} +
chmod 0600 "$dir/ca.key"
echo "secrets in $dir — $workers worker certificates; ca.key is not mounted anywhere: move it offline"
