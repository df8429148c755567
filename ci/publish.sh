#!/usr/bin/env bash
# Build, sign and publish vkimg templates for one commit of the main branch.
#
# Runs the same in CI (ci/github/publish.yml) and on a developer machine
# against a local registry, e.g.:
#
#   docker-registry serve config.yml &            # listening on 127.0.0.1:5000
#   COSIGN_PASSWORD= vkimg keys generate ci       # once; ci.pub goes to nodes
#   VKIMG_REGISTRY=127.0.0.1:5000/vkimg VKIMG_SIGNING_KEY="$(cat ci.key)" \
#     COSIGN_PASSWORD= sudo -E ci/publish.sh
#
# Environment:
#   VKIMG_REGISTRY        repository prefix; recipe NAME goes to $VKIMG_REGISTRY/NAME (required)
#   VKIMG_SIGNING_KEY     the cosign private key PEM itself, a CI secret (required)
#   COSIGN_PASSWORD       its password (may be empty)
#   VKIMG_REGISTRY_USERNAME, VKIMG_REGISTRY_PASSWORD, or VKIMG_REGISTRY_AUTH (a
#                         docker config.json file); VKIMG_REGISTRY_CA (PEM file)
#   VKIMG_RECIPES         recipe files to build (default: recipes/vikunja.yaml)
#   VKIMG_COMMIT          source commit (default: git HEAD; GitHub: $GITHUB_SHA)
#   VKIMG_MAIN            "false" leaves the "main" tag alone (default: true)
#   VKIMG_BIN             vkimg binary to use (default: built from this checkout)
#   VKIMG_BUILD_CACHE     builder cache directory (Debian bases, downloads)
#   SOURCE_DATE_EPOCH     every timestamp in the templates (default: the commit's time)
#
# Prints one line per template: NAME VERSION DIGEST. Needs root (the builder
# runs mmdebstrap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

: "${VKIMG_REGISTRY:?set VKIMG_REGISTRY to the repository prefix, e.g. registry.example:5000/vkimg}"
: "${VKIMG_SIGNING_KEY:?set VKIMG_SIGNING_KEY to the cosign private key PEM (a CI secret)}"
export VKIMG_SIGNING_KEY COSIGN_PASSWORD="${COSIGN_PASSWORD-}"

recipes=${VKIMG_RECIPES:-recipes/vikunja.yaml}
commit=${VKIMG_COMMIT:-${GITHUB_SHA:-$(git rev-parse HEAD 2>/dev/null || true)}}
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
	: "${SOURCE_DATE_EPOCH:?no git commit to take the build time from: set SOURCE_DATE_EPOCH}"
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

vkimg=${VKIMG_BIN:-}
if [[ -z "$vkimg" ]]; then
	vkimg="$work/vkimg"
	go build -trimpath -o "$vkimg" ./cmd/vkimg
fi

# The public half of the signing key, to check each signature after pushing
# (the private key only ever passes through a pipe, never a file).
"$vkimg" keys public /dev/stdin <<<"$VKIMG_SIGNING_KEY" >"$work/signing.pub"

publish_flags=(--json)
[[ "${VKIMG_MAIN:-true}" != false ]] && publish_flags+=(--main)
[[ -n "$commit" ]] && publish_flags+=(--commit "$commit")
build_flags=()
[[ -n "$commit" ]] && build_flags+=(--revision "$commit")
[[ -n "${VKIMG_BUILD_CACHE:-}" ]] && build_flags+=(--cache "$VKIMG_BUILD_CACHE")

for recipe in $recipes; do
	name=$(basename "$recipe" .yaml)
	out="$work/$name"
	echo "== build $recipe" >&2
	"$vkimg" build --output "$out" --rootfs-dir "$out.rootfs" "${build_flags[@]}" "$recipe" >&2
	echo "== publish $name to $VKIMG_REGISTRY/$name" >&2
	"$vkimg" publish --layout "$out" "${publish_flags[@]}" "$VKIMG_REGISTRY/$name" >"$work/$name.json"
	digest=$(sed -n 's/^ *"digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "$work/$name.json")
	[[ -n "$digest" ]] || { echo "publish printed no digest" >&2; cat "$work/$name.json" >&2; exit 1; }
	echo "== verify $VKIMG_REGISTRY/$name@$digest" >&2
	"$vkimg" templates show --trusted-key "$work/signing.pub" --json "$VKIMG_REGISTRY/$name@$digest" >"$work/$name.show.json"
	version=$(sed -n 's/^ *"version": "\([^"]*\)".*/\1/p' "$work/$name.show.json" | head -1)
	echo "$name $version $digest"
done
