#!/bin/sh
# Entry point of the imagelib image: runs the binary named by SERVICE_BINARY (set
# from the build argument SERVICE; override with `-e SERVICE_BINARY=...`).
# `imagelib` with no arguments runs `imagelib serve` (the four services in one process).
set -eu

service="${SERVICE_BINARY:-imagelib}"
case "$service" in
  imagelib | registry-registry | sync-scanner | catalog-projector | serving-deployer) ;;
  *)
    echo "docker-entrypoint: unknown SERVICE_BINARY '$service'" >&2
    exit 64
    ;;
esac

if [ "$service" = imagelib ] && [ "$#" -eq 0 ]; then
  set -- serve
fi

exec "/usr/local/bin/$service" "$@"
