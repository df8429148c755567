#!/usr/bin/env bash
# Installs everything vkimg's builds and tests need on a fresh Debian 12
# machine, as root. Safe to rerun: every step checks before it acts.
set -euo pipefail

log() { printf '%s setup: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (it installs packages and configures LXC)" >&2; exit 2; }

export DEBIAN_FRONTEND=noninteractive
PKGS=(
	lxc uidmap nftables debootstrap mmdebstrap   # containers and template bases
	nginx docker-registry skopeo zstd            # edge proxy, OCI registry, Proxmox's OCI pull tool
	postgresql mariadb-server sqlite3            # databases the instances use
	chromium chromium-driver tmux apache2-utils  # browser, terminal and htpasswd for tests
	ca-certificates curl git make gcc jq bc
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt-get install ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start nothing here (no systemd); tests start their own.

# Unprivileged containers map root to 100000, as Proxmox does.
for f in /etc/subuid /etc/subgid; do
	grep -q '^root:100000:65536$' "$f" 2>/dev/null || echo 'root:100000:65536' >>"$f"
done

export PATH="$PATH:/usr/local/go/bin"
gobin="$(go env GOPATH)/bin"
export PATH="$PATH:$gobin"
install_go_tool() { # name module@version
	if ! "$gobin/$1" version >/dev/null 2>&1; then
		log "go install $2"
		go install "$2"
	fi
}
install_go_tool crane github.com/google/go-containerregistry/cmd/crane@v0.22.1
install_go_tool cosign github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5

if [ -f mcp/package-lock.json ] && [ ! -d mcp/node_modules ]; then
	log "npm ci (mcp)"
	(cd mcp && npm ci --no-audit --no-fund >/dev/null)
fi
log "done"
