#!/bin/sh
# `ecqa-healthcheck [URL]`: exit 0 when URL (default $HEALTHCHECK_URL) answers 2xx within 5 s, else 1.
#
# The gateway's GET /healthz and a worker's GET /v1/health are served behind mutual TLS 1.3 (cloud/gateway.py,
# edge/worker.py): the handshake itself refuses a caller without a certificate from the project's CA, so an
# https:// URL is asked with the client certificate edges/$HEALTHCHECK_EDGE (default `probe`, issued by
# `ecqa cloud init --edge probe`) and the server is verified against ca.pem — both from $ECQA_CLOUD_DIR, where
# ecqa-entrypoint laid them out. Both servers' certificates name localhost, so the probe never leaves the container.
# Without a URL (a one-shot command such as `ecqa index build`) there is nothing serving and nothing to check.
set -eu

url="${1:-${HEALTHCHECK_URL:-}}"
[ -n "$url" ] || exit 0
dir="${ECQA_CLOUD_DIR:-/tmp/ecqa/cloud}"
edge="${HEALTHCHECK_EDGE:-probe}"

case "$url" in
  https://*)
    exec curl --fail --silent --show-error --max-time 5 --output /dev/null --tlsv1.3 \
      --cacert "$dir/ca.pem" --cert "$dir/edges/$edge.pem" --key "$dir/edges/$edge.key" "$url" ;;
  *)
    exec curl --fail --silent --show-error --max-time 5 --output /dev/null "$url" ;;
esac
