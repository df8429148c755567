#!/usr/bin/env bash
# The quick start's main job: deploy a local Vikunja instance the way an
# administrator would, on the embedded default — LXC backend, local OCI
# layout, SQLite, a self-signed certificate — and print its URL. Run by
# `make quickstart` after scripts/setup.sh and `make build`. Rerunning it
# only reports the instance that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${QUICKSTART_NAME:-quickstart}
domain=${QUICKSTART_DOMAIN:-vikunja.localhost}
bridge=${QUICKSTART_BRIDGE:-vkimg0}
subnet=${QUICKSTART_SUBNET:-10.77.0.1/24} # the bridge's own address; as `vkimg preview`
root=${VKIMG_ROOT:-/var/lib/vkimg}
# Where vkimg looks for the pinned key: under VKIMG_ROOT when that is set.
if [ -n "${VKIMG_ROOT:-}" ]; then trusted=$VKIMG_ROOT/etc/trusted.pub; else trusted=/etc/vkimg/trusted.pub; fi
key=$root/keys/quickstart # .key (private, 0600) and .pub
vkimg=bin/vkimg

log() { printf '%s quickstart: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

reach() {
	cat <<EOF

Reach it through this node's nginx on port 443 (self-signed certificate):
  curl -k --resolve $domain:443:127.0.0.1 https://$domain/
In a browser on this machine open https://$domain/ (*.localhost is this
machine) and accept the certificate. Instance configuration:
$root/instances/$name/instance.yaml; log: /var/log/vkimg/$name.log
EOF
}

if [ -f "$root/instances/$name/instance.yaml" ]; then
	log "instance $name exists already: https://$domain/ (nothing changed)"
	$vkimg list
	reach
	exit 0
fi

version=$(sed -n 's/^version: *//p' recipes/standin.yaml)
log "build the stand-in template $version"
$vkimg build --output "$root/build" recipes/standin.yaml

# One signing key per machine, made once: deploy verifies every template
# against the pinned public key, so the local template is signed too.
export COSIGN_PASSWORD=${COSIGN_PASSWORD:-}
if [ ! -f "$key.key" ]; then
	[ ! -f "$trusted" ] || { echo "quickstart: $trusted exists but $key.key does not: sign the template with that key's private half, or move it away" >&2; exit 2; }
	log "make the signing key $key.key, pinned as $trusted"
	install -d -m 0700 "$root/keys"
	(umask 077 && $vkimg keys generate "$key")
	chmod 0600 "$key.key"
fi
if [ ! -f "$trusted" ]; then
	install -d -m 0755 "$(dirname "$trusted")"
	install -m 0644 "$key.pub" "$trusted"
fi
cmp -s <($vkimg keys public "$key.key") "$trusted" ||
	{ echo "quickstart: $trusted is not the public key of $key.key" >&2; exit 2; }

log "sign the template into the local layout $root/templates"
$vkimg publish --key "$key.key" --main --layout "$root/build" "$version" "oci-layout:$root/templates"

# No NAT: the containers need nothing beyond this node.
if ! ip link show "$bridge" >/dev/null 2>&1; then
	log "create bridge $bridge ($subnet)"
	ip link add "$bridge" type bridge
	ip addr add "$subnet" dev "$bridge"
	ip link set "$bridge" up
fi

# The node's nginx (no systemd here: nginx daemonizes by itself).
if ! { [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; }; then
	log "start nginx"
	nginx
fi

answers=$root/quickstart-answers.yaml
install -m 0600 /dev/null "$answers"
cat >"$answers" <<EOF
name: $name
template:
  version: "$version"   # from the local layout $root/templates
database:
  type: sqlite
url: https://$domain
admin:
  email: admin@$domain
resources: {cores: 1, memory_mb: 512, disk_gb: 2}
network:
  bridge: $bridge
tls:
  self_signed: true
EOF
log "deploy $name from $answers"
$vkimg deploy --config "$answers" --yes --hypervisor lxc
reach
