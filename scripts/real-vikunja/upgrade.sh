#!/usr/bin/env bash
# Upgrades, rolls back, backs up and restores a real Vikunja that you built
# yourself (this repository holds none of Vikunja's code, binaries or build
# scripts), the way an administrator would, under load:
#
#   1. builds a template for each binary, signs both with a throwaway key
#      into one local layout, and deploys OLD from it (`vkimg deploy`);
#   2. creates data through nginx: the admin and a second user, projects,
#      a few hundred tasks, an attachment of a few MB;
#   3. `vkimg upgrade` while HTTP/2 and HTTP/1.1 keep-alive clients read and
#      write through nginx over HTTPS and a large upload is in flight across
#      the switch (scripts/real-vikunja/load); checks that NEW answers
#      through nginx and that all data is there;
#   4. `vkimg rollback --yes` under the same load: NEW migrated the database,
#      so this restores the pre-upgrade backup and what was written since
#      the upgrade is lost; checks the data equals the pre-upgrade state;
#   5. `vkimg backup`, changes data, `vkimg restore --yes`: checks the data
#      equals the backup's state;
#   6. prints a table of figures, and removes everything it made.
#
#   scripts/real-vikunja/upgrade.sh OLD_BIN OLD_VER NEW_BIN NEW_VER [DATABASE.yaml]
#
# DATABASE.yaml is a deploy answers fragment with a `database:` section
# (docs/answers.example.yaml) for PostgreSQL or MariaDB instead of SQLite;
# the database must be empty (the run leaves its data there) and reachable
# from the containers, e.g. on this node at the bridge's address ($SUBNET
# without the prefix length).
#
# Everything is private to the run: the state root ($OUT/root as
# VKIMG_ROOT), an nginx of its own on 127.0.0.1:$HTTP_PORT/$HTTPS_PORT
# (domain $NAME.vkimg.test, reached without DNS), and the bridge $BRIDGE
# ($SUBNET), created when missing. KEEP=1 leaves the instance, nginx and
# the bridge running. UPLOAD_MB (16) and UPLOAD_S (120) size the upload
# that crosses the upgrade's switch. The load sends its writes one at a
# time: real Vikunja fails some concurrent writes by itself (SQLite:
# "database is locked"; any database: two tasks created at once in one
# project get the same index); SERIAL_WRITES=0 lets them race. Needs root
# and `make setup`. Output directory: $OUT (default a temp dir); the logs
# and summary stay there.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -ge 4 ] || { sed -n '2,39p' "$0" >&2; exit 2; }
old_bin=$(realpath "$1")
old_ver=${2#v}
new_bin=$(realpath "$3")
new_ver=${4#v}
db_answers=${5:+$(realpath "$5")}
for b in "$old_bin" "$new_bin"; do [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }; done
. scripts/real-vikunja/lib.sh

name=${NAME:-realup}
bridge=${BRIDGE:-vkrv0}
subnet=${SUBNET:-10.78.0.1/24}
http_port=${HTTP_PORT:-8480}
https_port=${HTTPS_PORT:-8443}
upload_bytes=$((${UPLOAD_MB:-16} << 20))
upload_s=${UPLOAD_S:-120}
serial=-serial-writes=$([ "${SERIAL_WRITES:-1}" = 0 ] && echo false || echo true)
domain=$name.vkimg.test
base=https://$domain:$https_port

out=${OUT:-$(mktemp -d /tmp/vkimg-real-upgrade-XXXXXX)}
mkdir -p "$out/logs"
# The containers' service users reach the data volume below it.
chmod 0755 "$out"
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# --- templates -------------------------------------------------------------
build_template "$old_bin" "$old_ver" "$out/old"
old_build_s=$(printf '%.1f' "$build_s")
build_template "$new_bin" "$new_ver" "$out/new"
new_build_s=$(printf '%.1f' "$build_s")

log "signing both templates with a throwaway key into $out/signed"
export COSIGN_PASSWORD=
"$vkimg" keys generate "$out/key" >/dev/null
publish() { "$vkimg" publish --key "$out/key.key" "oci-layout:$out/$1/templates:$2" "oci-layout:$out/signed" >/dev/null; }
publish old "$old_ver"

# From here on every vkimg command works in the run's own state root, and
# trusts the throwaway key as a node pins its own.
export VKIMG_ROOT=$out/root
install -D -m 0644 "$out/key.pub" "$VKIMG_ROOT/etc/trusted.pub"

# --- the node: bridge and nginx ----------------------------------------------
made_bridge=
ngx=$out/nginx
cleanup() {
	local rc=$?
	set +e
	[ -z "${load_pid:-}" ] || kill "$load_pid" 2>/dev/null
	cp -r "$VKIMG_ROOT/log/." "$out/logs/" 2>/dev/null
	if [ "${KEEP:-}" = 1 ]; then
		log "KEEP=1: instance $name left running ($base, VKIMG_ROOT=$VKIMG_ROOT, nginx -c $ngx/nginx.conf)"
		exit $rc
	fi
	log "removing the instance's containers, nginx and state"
	for id in $(lxc-ls -P "$VKIMG_ROOT/lxc" 2>/dev/null); do
		lxc-stop -P "$VKIMG_ROOT/lxc" -n "$id" -k >/dev/null 2>&1
		lxc-destroy -P "$VKIMG_ROOT/lxc" -n "$id" >/dev/null
	done
	[ -s "$ngx/nginx.pid" ] && kill -QUIT "$(cat "$ngx/nginx.pid")"
	[ -z "$made_bridge" ] || ip link del "$bridge"
	rm -rf "$VKIMG_ROOT" "$ngx" "$out/old" "$out/new" "$out/signed" "$out/key.key" "$out/load" "$out"/attachment*.bin
	log "logs and summary: $out"
	exit $rc
}
trap cleanup EXIT

if ! ip link show "$bridge" >/dev/null 2>&1; then
	log "creating bridge $bridge ($subnet)"
	ip link add "$bridge" type bridge
	made_bridge=1
	ip addr add "$subnet" dev "$bridge"
	ip link set "$bridge" up
fi

log "starting nginx on 127.0.0.1:$http_port and :$https_port"
# Workers run as www-data and need their temporary directories.
mkdir -p "$ngx/conf.d" "$ngx/main.d" "$ngx/vkimg" "$ngx/temp"
chown www-data "$ngx/temp"
cat >"$ngx/nginx.conf" <<EOF
user www-data;
worker_processes 2;
pid $ngx/nginx.pid;
error_log $ngx/error.log notice;
include $ngx/main.d/*.conf;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log $ngx/access.log;
    client_body_temp_path $ngx/temp/body;
    proxy_temp_path $ngx/temp/proxy;
    fastcgi_temp_path $ngx/temp/fastcgi;
    uwsgi_temp_path $ngx/temp/uwsgi;
    scgi_temp_path $ngx/temp/scgi;
    server {
        listen 127.0.0.1:$http_port default_server;
        listen 127.0.0.1:$https_port ssl http2 default_server;
        ssl_reject_handshake on;
        return 444;
    }
    include $ngx/conf.d/*.conf;
}
EOF
nginx -c "$ngx/nginx.conf" -e "$ngx/error.log"
node=(--hypervisor lxc --nginx-config "$ngx/nginx.conf" --nginx-pid-file "$ngx/nginx.pid"
	--nginx-conf-dir "$ngx/conf.d" --nginx-upstream-dir "$ngx/vkimg" --nginx-main-dir "$ngx/main.d"
	--edge-address 127.0.0.1)

# --- deploy OLD ----------------------------------------------------------------
answers=$out/answers.yaml
install -m 0600 /dev/null "$answers"
cat >"$answers" <<EOF
name: $name
template:
  source: $out/signed
  version: "$old_ver"
url: $base
admin:
  email: admin@$domain
  username: admin
resources: {cores: 2, memory_mb: 1024, disk_gb: 4}
network:
  bridge: $bridge
ports: {http: $http_port, https: $https_port}
storage: {rootfs: local, template: local}
tls:
  self_signed: true
EOF
if [ -n "$db_answers" ]; then cat "$db_answers" >>"$answers"; else echo 'database: {type: sqlite}' >>"$answers"; fi
export VKIMG_ADMIN_PASSWORD=${VKIMG_ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
bob_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

log "deploying Vikunja $old_ver"
t=$(now)
"$vkimg" deploy --config "$answers" --yes "${node[@]}" >"$out/logs/deploy.out" 2>"$out/logs/deploy.err" ||
	{ cat "$out/logs/deploy.err" >&2; exit 1; }
deploy_s=$(since "$t")
instance_yaml=$VKIMG_ROOT/instances/$name/instance.yaml
cert=$(awk '/^tls:/ {t = 1} t && /certificate:/ {print $2; exit}' "$instance_yaml")
db_type=$(awk '/^database:/ {d = 1} d && /type:/ {print $2; exit}' "$instance_yaml")

# --- talking to Vikunja through nginx -------------------------------------------
curl_() { curl -sS --fail-with-body -k --resolve "$domain:$https_port:127.0.0.1" "$@"; }
# api TOKEN METHOD PATH [curl args]: Vikunja's API as a user.
api() {
	local token=$1 method=$2 path=$3
	shift 3
	curl_ -X "$method" -H "Authorization: Bearer $token" "$@" "$base/api/v1$path"
}
# japi TOKEN METHOD PATH JSON
japi() { api "$1" "$2" "$3" -H 'Content-Type: application/json' -d "$4"; }
login() { jq -n --arg u "$1" --arg p "$2" '{username: $u, password: $p, long_token: true}' |
	curl_ -H 'Content-Type: application/json' -d @- "$base/api/v1/login" | jq -er .token; }
# version: what nginx's active slot reports, and the slot.
version() {
	local headers body
	headers=$(mktemp)
	body=$(curl_ -D "$headers" "$base/api/v1/info")
	printf '%s (slot %s)' "$(jq -r .version <<<"$body")" "$(sed -n 's/^[Xx]-[Vv]kimg-[Ss]lot: *//p' "$headers" | tr -d '\r')"
	rm -f "$headers"
}
active_container() { "$vkimg" list --json --hypervisor lxc | jq -er --arg n "$name" '.[] | select(.name == $n) | .containerId'; }

# create_user NAME PASSWORD: registration is off, so the user is made by
# `vikunja user create` in the active container, its password typed at
# the two prompts through a pseudo-terminal (as the template's bootstrap
# does): never on a command line.
create_user() {
	local user=$1 password=$2 chunk prompt
	coproc CREATE {
		lxc-attach -P "$VKIMG_ROOT/lxc" -n "$(active_container)" --clear-env -- \
			setpriv --reuid=990 --regid=990 --clear-groups \
			script -qec "/opt/vikunja/vikunja user create -u $user -e $user@$domain" /dev/null 2>&1
	}
	for prompt in 'Enter Password' 'Confirm Password'; do
		while IFS= read -r -d : -t 120 chunk <&"${CREATE[0]}"; do
			[[ $chunk == *"$prompt" ]] && break
		done
		printf '%s\n' "$password" >&"${CREATE[1]}"
	done
	chunk=$(cat <&"${CREATE[0]}")
	wait "$CREATE_PID" || { echo "vikunja user create $user failed: ${chunk//$password/[redacted]}" >&2; return 1; }
}

# snapshot TOKEN OUT [all]: what a user sees, as canonical JSON: projects
# and their tasks (without the load's projects, unless "all") with their
# attachments.
snapshot() {
	local token=$1 dest=$2 which=${3:-} page=1 pages dir
	dir=$(mktemp -d)
	api "$token" GET "/projects?per_page=1000" >"$dir/projects"
	while :; do
		api "$token" GET "/tasks?page=$page&per_page=50&sort_by=id&order_by=asc" -D "$dir/headers" >"$dir/tasks.$page"
		pages=$(sed -n 's/^[Xx]-[Pp]agination-[Tt]otal-[Pp]ages: *//p' "$dir/headers" | tr -d '\r')
		[ "$page" -lt "${pages:-1}" ] || break
		page=$((page + 1))
	done
	jq -n --arg all "$which" --slurpfile p "$dir/projects" '
		([$p[0][] | {id, title, description, archived: .is_archived}] | sort_by(.id)
			| map(select($all == "all" or (.title | startswith("vkimg load ") | not)))) as $keep
		| {projects: $keep, tasks: ([inputs[] | select(.project_id as $id | $keep | any(.id == $id))
			| {id, title, description, done, due_date, project_id, index, priority, percent_done,
				attachments: [(.attachments // [])[] | {id, name: .file.name, size: .file.size}]}] | sort_by(.id))}' \
		"$dir"/tasks.* >"$dest"
	rm -rf "$dir"
}
# state OUT [all]: both users' snapshots and the attachment's checksum.
state() {
	local dir
	dir=$(mktemp -d)
	snapshot "$admin" "$dir/admin" "${2:-}"
	snapshot "$bob" "$dir/bob" "${2:-}"
	api "$admin" GET "/tasks/$att_task/attachments/$att_id" >"$dir/attachment"
	jq -n --slurpfile admin "$dir/admin" --slurpfile bob "$dir/bob" --arg file "$(sha256sum <"$dir/attachment" | cut -d' ' -f1)" \
		'{admin: $admin[0], bob: $bob[0], attachment_sha256: $file}' >"$1"
	rm -rf "$dir"
}
# same WHAT A B: "yes" when two states are equal; otherwise "NO", and the
# difference is shown.
same() {
	if cmp -s "$2" "$3"; then echo yes; return; fi
	log "$1: the data differs ($2 vs $3):"
	diff <(jq . "$2") <(jq . "$3") | head -n 40 >&2
	echo NO
}
count_tasks() { jq '[.admin.tasks, .bob.tasks] | map(length) | add' "$1"; }
failed=

# --- data --------------------------------------------------------------------------
v_deploy=$(version)
log "Vikunja $v_deploy answers through nginx; creating data"
admin=$(login admin "$VKIMG_ADMIN_PASSWORD")
create_user bob "$bob_password"
bob=$(login bob "$bob_password")
seed() { # TOKEN PROJECT-TITLE TASKS
	local token=$1 project i id
	project=$(japi "$token" PUT /projects "$(jq -nc --arg t "$2" '{title: $t}')" | jq -er .id)
	for ((i = 1; i <= $3; i++)); do
		id=$(japi "$token" PUT "/projects/$project/tasks" "$(jq -nc --arg t "$2 task $i" --argjson i "$i" \
			'{title: $t, description: "created before the upgrade, number \($i)", priority: ($i % 5),
			  due_date: "2030-01-\(($i % 28) + 1 | tostring | if length == 1 then "0" + . else . end)T12:00:00Z"}')" | jq -er .id)
		if ((i % 7 == 0)); then # Vikunja replaces the whole task: read, change, send back
			api "$token" GET "/tasks/$id" | jq -c '.done = true | .percent_done = 1' |
				api "$token" POST "/tasks/$id" -H 'Content-Type: application/json' -d @- >/dev/null
		fi
	done
	echo "$project"
}
t=$(now)
seed "$admin" "Operations" 150 >/dev/null
project=$(seed "$admin" "Releases" 100)
seed "$bob" "Bob's errands" 60 >/dev/null
head -c $((5 << 20)) /dev/urandom >"$out/attachment.bin"
att_task=$(japi "$admin" PUT "/projects/$project/tasks" '{"title":"release notes with an attachment"}' | jq -er .id)
att_id=$(api "$admin" PUT "/tasks/$att_task/attachments" -F "files=@$out/attachment.bin" | jq -er '.success[0].id')
seed_s=$(since "$t")
state "$out/state-before-upgrade.json"
tasks_before=$(count_tasks "$out/state-before-upgrade.json")
[ "$(jq -r .attachment_sha256 "$out/state-before-upgrade.json")" = "$(sha256sum <"$out/attachment.bin" | cut -d' ' -f1)" ] ||
	{ log "the attachment downloaded is not the file uploaded"; exit 1; }
log "created 2 users, 3 projects, $tasks_before tasks and a 5 MB attachment in ${seed_s} s"

# --- load ----------------------------------------------------------------------------
go build -o "$out/load" ./scripts/real-vikunja/load
# start_load WHAT UPLOAD: traffic through nginx until stop_load, with an
# upload of UPLOAD bytes; the report goes to $out/load-WHAT.json.
start_load() {
	rm -f "$out/stop" "$out/ready"
	load_t0=$(now)
	load_line0=$(wc -l <"$ngx/access.log")
	"$out/load" -url "$base" -cert "$cert" -stop-file "$out/stop" -ready-file "$out/ready" \
		-upload "$2" -upload-for "${upload_s}s" "$serial" -check >"$out/load-$1.json" 2>"$out/logs/load-$1.err" &
	load_pid=$!
	until [ -e "$out/ready" ]; do
		kill -0 "$load_pid" 2>/dev/null || { cat "$out/logs/load-$1.err" >&2; exit 1; }
		sleep 0.2
	done
}
# stop_load WHAT: ends the load, and writes what failed as nginx and
# Vikunja saw it meanwhile to $out/errors-WHAT.txt.
stop_load() {
	touch "$out/stop"
	wait "$load_pid" || { cat "$out/logs/load-$1.err" >&2; exit 1; }
	printf 'nginx answered %s; Vikunja logged %s\n' \
		"$(tail -n +"$((load_line0 + 1))" "$ngx/access.log" |
			awk '$9 !~ /^2/ {n[$9]++} END {for (s in n) printf "%d×%s ", n[s], s; if (!length(n)) printf "no error"}')" \
		"$(vikunja_errors "$load_t0" "$(now)")" >"$out/errors-$1.txt"
	jq -r '"  load: \(.summary)\n  written tasks read back: \(.checkWritten | .[0:300])"' "$out/load-$1.json" >&2
	cat "$out/errors-$1.txt" >&2
}
# vikunja_errors SINCE UNTIL: Vikunja's ERROR lines in every slot's journal
# (kept in the containers' root filesystems, running or not), by reason,
# numbers (IDs) left out.
vikunja_errors() {
	local j
	for j in "$VKIMG_ROOT"/lxc/storage/*/images/*/rootfs/var/log/journal; do
		journalctl -D "$j" -u vikunja.service --since "@${1%.*}" --until "@$((${2%.*} + 1))" -o cat 2>/dev/null || true
	done | awk '/level=ERROR/ {
			i = index($0, " err=")
			if (i) reason = substr($0, i + 5)
			else if (match($0, /msg="[^"]*"/)) reason = substr($0, RSTART + 4, RLENGTH - 4)
			else reason = $0
			gsub(/[0-9]+/, "N", reason)
			n[reason]++
		}
		END {for (r in n) printf "%d×%s; ", n[r], r; if (!length(n)) printf "no error"}'
}
# marking LOG: passes vkimg's progress through, into LOG with the time of
# each line, and tells the load when nginx switches slots.
marking() {
	local line
	while IFS= read -r line; do
		printf '%s\n' "$line" >&2
		printf '%s %s\n' "$(now)" "$line" >>"$1"
		[[ $line != *"switch nginx to the other slot"* ]] || kill -USR1 "$load_pid" 2>/dev/null || true
	done
}
# at LOG REGEX: when the first line matching REGEX was seen.
at() { awk -v re="$2" '$0 ~ re {print $1; exit}' "$1"; }
# between LOG FROM TO: seconds from the first line matching FROM to the
# first matching TO.
between() { printf '%.1f' "$(echo "$(at "$1" "$3") - $(at "$1" "$2")" | bc)"; }
# longest LOG: the three longest steps of a vkimg command, with seconds.
longest() {
	awk '{t[NR] = $1; line[NR] = $0} END {
			for (i = 1; i <= NR; i++) if (line[i] ~ / step [0-9]+\/[0-9]+: /) {
				name = line[i]; sub(/.* step [0-9]+\/[0-9]+: /, "", name)
				printf "%.1f %s\n", (i < NR ? t[i + 1] : t[i]) - t[i], name
			}
		}' "$1" | sort -rn | head -n 3 | awk '{d = $1; $1 = ""; printf "%s%s %s s", (NR > 1 ? "," : ""), $0, d}'
}

# --- upgrade ----------------------------------------------------------------------------
log "the same load for ${BASELINE_S:-30} s with nothing else happening, for comparison"
start_load baseline 0
sleep "${BASELINE_S:-30}"
stop_load baseline

publish new "$new_ver"
"$vkimg" upgrade --check "${node[@]}" "$name" | tee "$out/logs/upgrade-check.out" >&2
migrations=$(grep -o '[0-9]\{14\}' "$out/logs/upgrade-check.out" | sort -u | wc -l)
log "upgrading $old_ver → $new_ver under load (${UPLOAD_MB:-16} MB upload over ${upload_s} s)"
start_load upgrade "$upload_bytes"
t=$(now)
"$vkimg" upgrade "${node[@]}" "$name" 2>&1 | marking "$out/logs/upgrade.timed"
upgrade_s=$(since "$t")
upgrade_flip_s=$(between "$out/logs/upgrade.timed" ' started$' ' step [0-9]+/[0-9]+: switch nginx')
stop_load upgrade
v_upgrade=$(version)
[[ $v_upgrade == "v$new_ver "* ]] || { log "after the upgrade nginx serves $v_upgrade, want v$new_ver"; failed=1; }
state "$out/state-after-upgrade.json"
upgrade_same=$(same "upgrade" "$out/state-before-upgrade.json" "$out/state-after-upgrade.json")

# Written after the upgrade: the rollback's restore loses it.
marker=$(japi "$admin" PUT "/projects/$project/tasks" '{"title":"written after the upgrade"}' | jq -er .id)
log "task $marker written after the upgrade"

# --- rollback -----------------------------------------------------------------------------
log "rolling back to $old_ver under load: $new_ver migrated the database, so the rollback restores the
           pre-upgrade backup, and everything written since the upgrade is lost (task $marker,
           the load's writes during the rollback)"
start_load rollback "$upload_bytes"
t=$(now)
"$vkimg" rollback --yes "${node[@]}" "$name" 2>&1 | marking "$out/logs/rollback.timed"
rollback_s=$(since "$t")
# Nothing answers from the moment the serving slot stops until nginx
# switches to the restored one.
rollback_down_s=$(between "$out/logs/rollback.timed" ' step [0-9]+/[0-9]+: stop' ' step [0-9]+/[0-9]+: switch nginx')
stop_load rollback
v_rollback=$(version)
[[ $v_rollback == "v$old_ver "* ]] || { log "after the rollback nginx serves $v_rollback, want v$old_ver"; failed=1; }
state "$out/state-after-rollback.json"
rollback_same=$(same "rollback" "$out/state-before-upgrade.json" "$out/state-after-rollback.json")
if api "$admin" GET "/tasks/$marker" >/dev/null 2>&1; then
	marker_gone=NO
	failed=1
else marker_gone=yes; fi

# --- backup and restore ------------------------------------------------------------------------
log "backing up"
t=$(now)
archive=$("$vkimg" backup "${node[@]}" "$name" 2>"$out/logs/backup.err") ||
	{ cat "$out/logs/backup.err" >&2; exit 1; }
backup_s=$(since "$t")
archive_bytes=$(stat -c %s "$archive")
state "$out/state-at-backup.json" all
"$vkimg" backups "$name" >&2

log "changing data after the backup"
for i in 1 2 3 4 5 6 7 8 9 10; do japi "$admin" PUT "/projects/$project/tasks" "{\"title\":\"after the backup $i\"}" >/dev/null; done
api "$bob" DELETE "/tasks/$(api "$bob" GET '/tasks?per_page=1' | jq -er '.[0].id')" >/dev/null
api "$admin" GET "/tasks/$att_task" | jq -c '.description = "changed after the backup"' |
	api "$admin" POST "/tasks/$att_task" -H 'Content-Type: application/json' -d @- >/dev/null
head -c $((1 << 20)) /dev/urandom >"$out/attachment2.bin"
api "$admin" PUT "/tasks/$att_task/attachments" -F "files=@$out/attachment2.bin" >/dev/null
state "$out/state-changed.json" all
cmp -s "$out/state-at-backup.json" "$out/state-changed.json" &&
	{ log "changing data changed nothing: the restore check would prove nothing"; exit 1; }

log "restoring $archive"
t=$(now)
"$vkimg" restore --yes "${node[@]}" "$archive" >"$out/logs/restore.out" 2>"$out/logs/restore.err" ||
	{ cat "$out/logs/restore.err" >&2; exit 1; }
restore_s=$(since "$t")
v_restore=$(version)
state "$out/state-after-restore.json" all
restore_same=$(same "restore" "$out/state-at-backup.json" "$out/state-after-restore.json")

# --- figures -------------------------------------------------------------------------------------
load_row() { # WHAT
	jq -r '.report | "\(.Sent) sent, \(.Failed) failed, \(.Retried) retried; by slot \(.BySlot | to_entries | map("\(.key)=\(.value)") | join(" "))"' "$out/load-$1.json"
}
upload_row() {
	jq -r '(if .uploadInFlightAtMark then "in flight at the switch" else "NOT in flight at the switch" end) + ", " +
		(if .report.UploadOK then "stored whole by slot \(.report.UploadSlot)" else "failed after \(.report.UploadBytes) bytes: \(.report.UploadErr | .[0:120])" end)' "$out/load-$1.json"
}
errs() { cat "$out/errors-$1.txt"; }
# Real Vikunja answers some concurrent writes with 500 even when nothing
# else happens (the baseline shows how many; on SQLite the upload's own
# write too): the upgrade must cause no failure of another kind, lose no
# acknowledged write, and carry the upload.
jq -e '.report.UploadOK and .checkWritten == "ok" and
	([.report.Errors // [] | .[] | select(test("500 Internal Server Error") | not)] | length == 0)' "$out/load-upgrade.json" >/dev/null || failed=1
! grep -qE '×50[234] ' "$out/errors-upgrade.txt" || failed=1
[ "$upgrade_same $rollback_same $marker_gone $restore_same" = "yes yes yes yes" ] || failed=1
tee "$out/summary.txt" <<REPORT

Real Vikunja $old_ver → $new_ver on $db_type, through nginx over HTTPS ($base)
| stage | figure |
|---|---|
| template build | $old_ver ${old_build_s} s, $new_ver ${new_build_s} s |
| deploy $old_ver | ${deploy_s} s; serves $v_deploy |
| data | 2 users, $tasks_before tasks in 3 projects, 5 MB attachment (${seed_s} s to create) |
| migrations $old_ver → $new_ver | ${migrations:-0} (listed by \`vkimg upgrade --check\`) |
| load (${serial#-}) with nothing else happening, ${BASELINE_S:-30} s | $(load_row baseline) |
| failures seen then | $(errs baseline) |
| upgrade | ${upgrade_s} s total; nginx switched after ${upgrade_flip_s} s; longest steps:$(longest "$out/logs/upgrade.timed") |
| load during upgrade | $(load_row upgrade) |
| failures seen during upgrade | $(errs upgrade) |
| upload during upgrade | $(upload_row upgrade) |
| writes read back after upgrade | $(jq -r '"\(.written) tasks: \(.checkWritten)"' "$out/load-upgrade.json") |
| after upgrade | serves $v_upgrade; data as before: $upgrade_same ($(count_tasks "$out/state-after-upgrade.json") tasks, attachment equal: $(jq -r --slurpfile a "$out/state-before-upgrade.json" 'if .attachment_sha256 == $a[0].attachment_sha256 then "yes" else "NO" end' "$out/state-after-upgrade.json")) |
| rollback (restores the pre-upgrade backup) | ${rollback_s} s total; ${rollback_down_s} s from stopping $new_ver to the switch; longest steps:$(longest "$out/logs/rollback.timed") |
| load during rollback | $(load_row rollback) |
| failures seen during rollback | $(errs rollback) |
| upload during rollback | $(upload_row rollback) |
| writes read back after rollback | $(jq -r '"\(.written) tasks: \(.checkWritten | split(": ")[0])"' "$out/load-rollback.json") (lost by design: written after the upgrade) |
| after rollback | serves $v_rollback; data equals the pre-upgrade state: $rollback_same; task written after the upgrade gone: $marker_gone |
| backup | ${backup_s} s; archive $archive_bytes bytes ($(basename "$archive")) |
| restore | ${restore_s} s; serves $v_restore; data equals the backup's: $restore_same ($(count_tasks "$out/state-after-restore.json") tasks) |
REPORT
[ -z "$failed" ] || { log "some checks FAILED (see above)"; exit 1; }
