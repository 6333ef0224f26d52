#!/usr/bin/env bash
# Build the base image of deploy/Dockerfile without a container registry: debootstrap a minimal Debian
# bookworm root filesystem from the Debian mirror (the only source this needs) and import it as a local
# image, `ecqa-base:bookworm` by default. Run as root (debootstrap needs it); installs debootstrap if missing.
#
#   deploy/base-image.sh [--engine docker|podman] [--tag NAME:TAG] [--mirror URL]
#
# The image is what `docker import` makes of the tarball: no layers of anyone else's, no metadata but the
# environment set below. deploy/Dockerfile's FROM names it (ARG BASE_IMAGE), and its stages install with apt
# what they need on top.
set -euo pipefail

engine=""
tag="ecqa-base:bookworm"
mirror="http://deb.debian.org/debian"
suite="bookworm"
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "base-image.sh: unknown argument $1 — see --help" >&2; exit 2 ;;
  esac
done

if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
  elif command -v podman >/dev/null 2>&1; then engine=podman
  else echo "base-image.sh: neither a running docker daemon nor podman — install one (apt-get install podman)" >&2; exit 2
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "base-image.sh: debootstrap needs root — run it with sudo" >&2; exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# minbase: dpkg, apt and their essentials only (~110 MB); the Dockerfile adds python3 and the rest.
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror"

# What a container image does not need: the package lists (the Dockerfile's apt-get update fetches them
# again), caches, logs, and documentation that apt would keep on adding.
rm -rf "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/apt/*.bin "${rootfs:?}"/var/cache/apt/archives/*.deb \
       "${rootfs:?}"/var/log/*.log "${rootfs:?}"/tmp/* "${rootfs:?}"/dev/* 2>/dev/null || true
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
EOF
cat > "$rootfs/etc/apt/apt.conf.d/01-container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF

# Entries sorted and owners numeric: the same rootfs gives the same tarball order.
tar --numeric-owner --sort=name -C "$rootfs" -c . \
  | "$engine" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      - "$tag"
echo "imported $tag ($engine): build the project image with"
echo "  $engine build -f deploy/Dockerfile -t ecqa:0.1.0 ."
