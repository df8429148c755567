#!/bin/bash
# Template build benchmark. Prints:
#   - the stand-in template's build time with warm caches (Debian base
#     cached, Go build cache and npm cache warm);
#   - its compressed size (OCI layers and the plain rootfs .tar.zst);
#   - for comparison, a rough equivalent of Proxmox's debian-12-standard
#     template (which cannot be downloaded here): mmdebstrap's "standard"
#     variant (Debian priorities required+important+standard, which is what
#     Proxmox's DAB-built standard template is made of) plus the same
#     packages and application files, compressed with zstd at a comparable
#     level.
# Needs root, mmdebstrap and zstd. BENCH_DIR keeps caches between runs
# (default /tmp/vkimg-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BENCH_DIR:-/tmp/vkimg-bench}
mkdir -p "$work"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
go build -o "$work/vkimg" ./cmd/vkimg
vk() { "$work/vkimg" build --cache "$work/cache" --revision bench "$@" recipes/standin.yaml; }

echo "== warming caches (first build may run mmdebstrap)"
rm -rf "$work/warm"
vk --output "$work/warm" >/dev/null 2>&1

runs=${BENCH_RUNS:-3}
echo "== warm-cache builds of recipes/standin.yaml ($runs runs)"
for i in $(seq "$runs"); do
	rm -rf "$work/out"
	s=$(date +%s.%N)
	vk --output "$work/out" >/dev/null 2>&1
	e=$(date +%s.%N)
	printf 'build %d: %.1f s\n' "$i" "$(echo "$e - $s" | bc)"
done

mib() { echo "scale=1; $1 / 1048576" | bc; }
man=$(grep -oE '"digest": *"sha256:[0-9a-f]+"' "$work/out/index.json" | head -1 | grep -oE '[0-9a-f]{64}')
# The image manifest lists the config first, then the two layers.
sizes=($(grep -oE '"size": *[0-9]+' "$work/out/blobs/sha256/$man" | grep -oE '[0-9]+'))
base=${sizes[1]} app=${sizes[2]}
rootfs=$(stat -c %s "$work"/out/rootfs/*.tar.zst)
unpacked=$(zstd -dc "$work"/out/rootfs/*.tar.zst | wc -c)
echo "== stand-in template (zstd)"
echo "base layer        $(mib "$base") MiB"
echo "application layer $(mib "$app") MiB"
echo "OCI image total   $(mib $((base + app))) MiB"
echo "plain rootfs      $(mib "$rootfs") MiB (unpacked $(mib "$unpacked") MiB)"

std="$work/standard.tar"
if [ ! -s "$std" ]; then
	echo "== building the debian-12-standard equivalent (mmdebstrap --variant=standard)"
	mmdebstrap --variant=standard --format=tar --include=systemd-sysv,ifupdown,iproute2,isc-dhcp-client,ca-certificates,nodejs,nginx-light \
		--skip=output/dev bookworm "$work/standard.tmp.tar" /etc/apt/sources.list.d/debian.sources >/dev/null 2>&1
	mv "$work/standard.tmp.tar" "$std"
fi
stdz=$(zstd -7 -T1 -c "$std" | wc -c)
echo "== debian-12-standard equivalent + the same packages (zstd -7)"
echo "standard base     $(mib "$stdz") MiB (unpacked $(mib "$(stat -c %s "$std")") MiB)"
echo "+ application     $(mib $((stdz + app))) MiB"
echo "ratio (stand-in OCI image / standard + app): $(echo "scale=2; ($base + $app) / ($stdz + $app)" | bc)"
