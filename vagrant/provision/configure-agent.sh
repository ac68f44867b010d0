#!/usr/bin/env bash
# Configures the installed trustpool-agent package on this node, as root:
# the lab CA, this host's client certificate and key (0600), and in
# /etc/trustpool/agent.toml (the packaged example, edited in place; dpkg
# keeps a changed conffile) the server to dial, the host name and, when
# given, the TPM's TCTI. Used by compute.sh (Vagrant lab) and by
# scripts/systemd-test, which runs it in a container booted with systemd.
#   configure-agent.sh PKI_DIR NAME SERVER_URL [TCTI]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 PKI_DIR NAME SERVER_URL [TCTI]" >&2; exit 2; }
pki=$1 name=$2 server=$3 tcti=${4:-}

install -m 0644 "$pki/ca.pem" /etc/trustpool/agent/ca.pem
install -m 0644 "$pki/hosts/$name.pem" /etc/trustpool/agent/host.pem
# Owner root: the agent reads it with CAP_DAC_READ_SEARCH.
install -m 0600 -o root -g root "$pki/hosts/$name.key" /etc/trustpool/agent/host.key

edits=(-e "s|^server = .*|server = \"$server\"|" -e "s|^hostname = .*|hostname = \"$name\"|")
[ -z "$tcti" ] || edits+=(-e "s|^tcti = .*|tcti = \"$tcti\"|")
sed "${edits[@]}" /etc/trustpool/agent.toml >/etc/trustpool/agent.toml.new
mv /etc/trustpool/agent.toml.new /etc/trustpool/agent.toml
chmod 0644 /etc/trustpool/agent.toml
