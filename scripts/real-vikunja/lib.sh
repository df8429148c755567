# Shared by the real-Vikunja scripts: build vkimg and a template whose
# backend is the given Vikunja binary. Source it; it sets $vkimg.

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# build_template BINARY VERSION OUT: builds vkimg into OUT and the template
# into OUT/templates (OCI layout) and OUT/rootfs; sets build_s (seconds).
build_template() {
	local binary=$1 version=$2 out=$3 start
	go build -trimpath -o "$out/vkimg" ./cmd/vkimg
	vkimg=$out/vkimg
	log "building the template for Vikunja $version"
	start=$(date +%s.%N)
	"$vkimg" build \
		--source "backend=file:$binary" \
		--version "backend=$version" --version "frontend=$version" --version "template=$version" \
		--output "$out/templates" --rootfs-dir "$out/rootfs" recipes/vikunja.yaml >"$out/build.txt"
	build_s=$(echo "$(date +%s.%N) - $start" | bc)
}
