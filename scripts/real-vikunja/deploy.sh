#!/usr/bin/env bash
# Deploys a real Vikunja binary that you built yourself (this repository
# holds none of Vikunja's code, binaries or build scripts) with
# `vkimg deploy`, then checks it the way a user would, through the node's
# nginx over HTTPS: headless Chromium renders the login page, the admin
# logs in and creates a task through the API, then logs in and adds a task
# in the browser (playwright-core from the npm registry drives Chromium).
#
#   scripts/real-vikunja/deploy.sh /path/to/vikunja 2.5.0 answers.yaml [vkimg deploy flags...]
#
# answers.yaml is a deploy answers file (docs/answers.example.yaml): its
# database section picks SQLite, PostgreSQL or MariaDB; its url names the
# domain, which is reached at 127.0.0.1 (curl --resolve / Chromium host
# rules), so no DNS is needed. The template is signed with a throwaway key
# that deploy is told to trust. nginx must be running on the node.
# Needs root and `make setup`. Output directory: $OUT (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
binary=$(realpath "$1")
version=${2#v}
answers=$(realpath "$3")
shift 3
. scripts/real-vikunja/lib.sh

out=${OUT:-$(mktemp -d /tmp/vkimg-real-vikunja-XXXXXX)}
mkdir -p "$out"
build_template "$binary" "$version" "$out"

log "signing it with a throwaway key"
export COSIGN_PASSWORD=
[ -f "$out/key.key" ] || "$vkimg" keys generate "$out/key" >/dev/null
"$vkimg" publish --key "$out/key.key" "oci-layout:$out/templates:$version" "oci-layout:$out/signed" >/dev/null

url=$(sed -n 's/^url: *\([^ #]*\).*/\1/p' "$answers")
domain=${url#https://}
domain=${domain%%/*}
https_port=$(sed -n 's/^ *https: *\([0-9]*\).*/\1/p' "$answers")
https_port=${https_port:-443}
export VKIMG_ADMIN_PASSWORD=${VKIMG_ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}

log "deploying"
start=$(date +%s.%N)
"$vkimg" deploy --config "$answers" --yes --template "$out/signed" --template-version "$version" \
	--trusted-key "$out/key.pub" "$@"
deploy_s=$(echo "$(date +%s.%N) - $start" | bc)

base=https://$domain:$https_port
resolve=(--resolve "$domain:$https_port:127.0.0.1")
log "checking $base through nginx"
start=$(date +%s.%N)
dom=$(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--user-data-dir="$out/chromium" --ignore-certificate-errors \
	--host-resolver-rules="MAP $domain 127.0.0.1" --virtual-time-budget=10000 \
	--dump-dom "$base/" 2>/dev/null)
page_s=$(echo "$(date +%s.%N) - $start" | bc)
grep -qi 'vikunja' <<<"$dom" && grep -qiE 'type="password"|password' <<<"$dom" ||
	{ echo "the rendered page has no Vikunja login form:" >&2; head -c 2000 <<<"$dom" >&2; exit 1; }

token=$(jq -n --arg p "$VKIMG_ADMIN_PASSWORD" '{username: "admin", password: $p}' |
	curl -fsSk "${resolve[@]}" -H 'Content-Type: application/json' -d @- "$base/api/v1/login" | jq -er .token)
auth=(-H "Authorization: Bearer $token" -H 'Content-Type: application/json')
info=$(curl -fsSk "${resolve[@]}" "$base/api/v1/info" | jq -er .version)
project=$(curl -fsSk "${resolve[@]}" "${auth[@]}" "$base/api/v1/projects" | jq -er '.[0].id')
task=$(curl -fsSk "${resolve[@]}" "${auth[@]}" -X PUT -d '{"title":"created through nginx"}' \
	"$base/api/v1/projects/$project/tasks" | jq -er .id)
log "logging in and adding a task in Chromium"
npm install --prefix "$out/playwright" --no-audit --no-fund --silent playwright-core@1 >/dev/null
# ES modules resolve imports beside the script: run a copy next to node_modules.
cp scripts/real-vikunja/browser-login.mjs "$out/playwright/"
browser=$(node "$out/playwright/browser-login.mjs" "$domain" "$VKIMG_ADMIN_PASSWORD" "$out/$domain.png")
slot=$(curl -fsSk "${resolve[@]}" -o /dev/null -D - "$base/health" | sed -n 's/^[Xx]-[Vv]kimg-[Ss]lot: *//p' | tr -d '\r')

cat <<REPORT
Vikunja $version (reports $info) deployed from $binary
  build:     ${build_s} s
  deploy:    ${deploy_s} s (vkimg deploy, to healthy through nginx)
  browser:   login page rendered by Chromium through nginx in ${page_s} s (includes Chromium start-up)
  API:       admin logged in through nginx; task $task created in project $project
  UI:        $browser (screenshot $out/$domain.png)
  slot:      $slot
  answers:   $answers
REPORT
