#!/usr/bin/env bash
# The quick start's main job: build the stand-in template into the local
# OCI layout, then boot it in a local LXC container and print where it
# answers. Run by `make quickstart` after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${VKIMG_ROOT:-/var/lib/vkimg}
version=$(sed -n 's/^version: *//p' recipes/standin.yaml)
bin/vkimg build recipes/standin.yaml
bin/vkimg preview "$root/templates/rootfs/debian-12-standin_${version}-1_amd64.tar.zst"
