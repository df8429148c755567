#!/usr/bin/env bash
# Checks vkimg with a real Vikunja binary that you built yourself (this
# repository holds none of Vikunja's code, binaries or build scripts):
# builds a template from recipes/vikunja.yaml with that binary as the
# backend, boots it in a local unprivileged LXC container, logs in, creates
# a task through the API and one through the MCP server, finds both through
# the MCP server, and prints the build time and the compressed sizes.
#
#   scripts/real-vikunja/template.sh /path/to/vikunja 2.5.0 [--keep]
#
# --keep leaves the container running (remove it with: vkimg preview --remove).
# Needs root, and `make setup` done. Output directory: $OUT (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
binary=$(realpath "$1")
version=${2#v}
keep=${3:-}
[ -x "$binary" ] || { echo "$binary: not an executable" >&2; exit 2; }

. scripts/real-vikunja/lib.sh
json() { jq -er "$1"; }

out=${OUT:-$(mktemp -d /tmp/vkimg-real-vikunja-XXXXXX)}
mkdir -p "$out"
build_template "$binary" "$version" "$out"
rootfs=$out/rootfs/debian-12-vikunja_${version}-1_amd64.tar.zst
layers=$(jq -r '.manifests[0].digest' "$out/templates/index.json" | sed 's/sha256://')
layer_bytes=$(jq '[.layers[].size] | add' "$out/templates/blobs/sha256/$layers")

log "booting it"
"$vkimg" preview --json "$rootfs" >"$out/preview.json"
[ "$keep" = --keep ] || trap '"$vkimg" preview --remove' EXIT
url=$(json .url <"$out/preview.json")
ip=$(json .address <"$out/preview.json")
password=$(json .adminPassword <"$out/preview.json")

api=http://$ip:3456/api/v1
log "logging in at $api"
token=$(jq -n --arg p "$password" '{username: "admin", password: $p}' |
	curl -fsS -H 'Content-Type: application/json' -d @- "$api/login" | json .token)
auth=(-H "Authorization: Bearer $token" -H 'Content-Type: application/json')
info_version=$(curl -fsS "$api/info" | json .version)
project=$(curl -fsS "${auth[@]}" -X PUT -d '{"title":"vkimg real-Vikunja check"}' "$api/projects" | json .id)
task=$(curl -fsS "${auth[@]}" -X PUT -d '{"title":"task via the API"}' "$api/projects/$project/tasks" | json .id)

mcp() { # tool arguments-json
	jq -n --arg name "$1" --argjson args "$2" \
		'{jsonrpc: "2.0", id: 1, method: "tools/call", params: {name: $name, arguments: $args}}' |
		curl -fsS -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
			-d @- "http://$ip:3457/mcp" | sed -n 's/^data: //p;/^{/p' | head -n 1
}
log "creating a task through the MCP server"
mcp create_task "{\"project_id\": $project, \"title\": \"task via MCP\"}" | json '.result.isError | not' >/dev/null
found=$(mcp search_tasks "{\"project_id\": $project}" | json '[.result.content[].text] | join("\n")')
grep -q 'task via the API' <<<"$found" && grep -q 'task via MCP' <<<"$found" ||
	{ echo "the MCP server does not list both tasks:" >&2; echo "$found" >&2; exit 1; }

page_bytes=$(curl -fsS "$url" | wc -c)
migrations=$(jq '.migrations | length' < <(tar --zstd -xOf "$rootfs" --wildcards '*etc/vkimg/template.json'))
cat <<REPORT
Vikunja $version (reports $info_version) from $binary
  build:        ${build_s} s (vkimg build, warm Debian base cache if built before)
  image:        $layer_bytes bytes compressed (OCI layers)
  rootfs:       $(stat -c %s "$rootfs") bytes ($(basename "$rootfs"))
  migrations:   $migrations in the manifest
  boot:         healthy (backend, embedded frontend page $page_bytes bytes, MCP handshake)
  API:          login as admin, project $project, task $task created
  MCP:          create_task and search_tasks work; both tasks found
  answers at:   $url
REPORT
