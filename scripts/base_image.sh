#!/usr/bin/env bash
# Builds a stand-in for python:3.11-slim from the Debian archive, for machines that reach no
# container registry (air gap, or a proxy that lets apt through but not registry-1.docker.io):
#
#   bash scripts/base_image.sh                       # -> image voxline/python:3.11-slim
#   make images BASE_IMAGE=voxline/python:3.11-slim  # the Dockerfiles build FROM it
#
# debootstrap --variant=minbase bookworm, with Debian's Python 3.11 (python3, python3-venv), then
# `python3 -m venv /usr/local` inside: python, pip and site-packages sit where the official image
# has them (/usr/local/bin/python, /usr/local/lib/python3.11/site-packages), so the Dockerfiles need
# no change. The root filesystem is imported with `docker import` (no registry, no Dockerfile).
# Needs root, debootstrap (apt-get install debootstrap) and a running dockerd. About 2 minutes.
#
# Knobs (environment): BASE_IMAGE (the tag made, default voxline/python:3.11-slim),
# DEBIAN_MIRROR (default: the host's first deb.debian.org-style URI, else http://deb.debian.org/debian),
# DOCKER (the docker CLI, default docker), FORCE=1 (rebuild even if the tag exists).
set -euo pipefail
tag="${BASE_IMAGE:-voxline/python:3.11-slim}"
docker_cli="${DOCKER:-docker}"
if [[ -z "${FORCE:-}" ]] && "$docker_cli" image inspect "$tag" >/dev/null 2>&1; then
  echo "base_image: $tag exists (FORCE=1 rebuilds it)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base_image: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "base_image: debootstrap needs root" >&2; exit 1; }

mirror="${DEBIAN_MIRROR:-}"
if [[ -z $mirror ]]; then
  # The mirror apt already uses here (a proxy or a local mirror works for debootstrap too).
  mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
             /etc/apt/sources.list.d/*.list 2>/dev/null | grep -o -E 'https?://[^ ]*/debian/?' \
           | head -n 1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi
rootfs=$(mktemp -d /tmp/voxline-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
start=$(date +%s)
echo "base_image: debootstrap bookworm from $mirror (log: $rootfs.log)"
# What python:3.11-slim carries besides Python: CA certificates, netbase, tzdata.
if ! debootstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates,netbase,tzdata \
      bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  echo "base_image: debootstrap failed; the end of $rootfs.log:" >&2
  tail -n 30 "$rootfs.log" >&2
  exit 1
fi
# The official image's layout: a Python whose prefix is /usr/local, with pip (Debian marks its own
# /usr Python "externally managed"; a venv at /usr/local is not).
chroot "$rootfs" /usr/bin/python3 -m venv /usr/local >>"$rootfs.log" 2>&1
chroot "$rootfs" /usr/local/bin/python -c 'import sys, ssl; assert sys.version_info[:2] == (3, 11)'
# Small, as -slim: no apt lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/root/.cache
tar -C "$rootfs" --numeric-owner -c . | "$docker_cli" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase bookworm + python3 -m venv /usr/local (scripts/base_image.sh)" \
  - "$tag" >/dev/null
rm -f "$rootfs.log"
echo "base_image: $tag built in $(( $(date +%s) - start )) s ($("$docker_cli" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
