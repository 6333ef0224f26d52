#!/bin/sh
# The image's entry point: `ecqa-entrypoint ARGS...` runs `ecqa ARGS...` after laying out the secrets.
#
# The cloud material (ca.pem, server.*, edges/NAME.*, workers/ID.*, aes.key; cloud/certs.py) is mounted read-only
# under $SECRETS_DIR — compose `secrets:` (bind mounts with the host file's owner and mode) or a Kubernetes
# secret volume (root-owned, group-readable through fsGroup, with ..data links). The gateway and the workers refuse
# a private key that group or others may read (as ssh does), so the files are copied into $ECQA_CLOUD_DIR (under
# /tmp: a tmpfs or a memory-backed emptyDir), owned by this user with mode 0600. Nothing is written to the image.
#
# Files under $SECRETS_ENV_DIR named ECQA_* become environment variables of that name (the registry password,
# the vLLM API key): the settings read ECQA_* from the environment only, and a manifest then never holds a secret.
set -eu

src="${SECRETS_DIR:-/run/secrets/ecqa}"
dst="${ECQA_CLOUD_DIR:-/tmp/ecqa/cloud}"
env_dir="${SECRETS_ENV_DIR:-/run/secrets/ecqa-env}"

if [ -d "$src" ]; then
  umask 077
  mkdir -p "$dst"
  # `..data` and `..2026_…` are a Kubernetes secret volume's own links: only the visible paths are material.
  (cd "$src" && find -L . -name '..?*' -prune -o -type f -print) | while IFS= read -r rel; do
    rel="${rel#./}"
    mkdir -p "$dst/$(dirname "$rel")"
    cat "$src/$rel" > "$dst/$rel.tmp"
    mv -f "$dst/$rel.tmp" "$dst/$rel"
  done
fi

if [ -d "$env_dir" ]; then
  for file in "$env_dir"/ECQA_*; do
    [ -f "$file" ] || continue
    name="$(basename "$file")"
    case "$name" in
      *[!A-Z0-9_]*) echo "ecqa-entrypoint: ignoring $file (not an ECQA_* variable name)" >&2; continue ;;
    esac
    value="$(cat "$file")"
    export "$name=$value"
  done
fi

exec ecqa "$@"
