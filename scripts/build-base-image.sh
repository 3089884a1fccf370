#!/usr/bin/env bash
# Build the local Python base image from debootstrap + docker import (no Docker Hub). Usage: scripts/build-base-image.sh [TAG]  (env: CLOUD_DEPLOY_BASE_IMAGE, DEBIAN_MIRROR)
set -euo pipefail
tag=${1:-${CLOUD_DEPLOY_BASE_IMAGE:-cloud-deploy/debian-python:bookworm}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag already present"
else
  if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  root=$tmp/rootfs
  t0=$(date +%s)
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || { tail -n 40 "$tmp/debootstrap.log" >&2; exit 1; }
  t1=$(date +%s)
  # apt inside the image works later; caches and lists go to keep it small
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
  # no man pages, translations or docs (copyright files stay), now and for later apt installs
  printf '%s\n' 'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*/LC_MESSAGES/*' \
    'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' >"$root/etc/dpkg/dpkg.cfg.d/01-slim"
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/locale/*/LC_MESSAGES/*
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/root/.cache
  : >"$root/etc/resolv.conf"
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
  t2=$(date +%s)
  size=$(docker image inspect -f '{{.Size}}' "$tag")
  echo "built $tag: debootstrap $((t1 - t0)) s, import $((t2 - t1)) s, total $((t2 - t0)) s, size $((size / 1048576)) MiB"
fi
docker run --rm "$tag" python3 -c 'import sys; print(sys.version)'
docker run --rm "$tag" python3 -m pip --version
