#!/usr/bin/env bash
# Configures the installed trustpool-server package on this node, as root:
# the CA of the agents' certificates, the server certificate and key (0600,
# owner trustpool), the EK roots, and in /etc/trustpool/server.toml (the
# packaged example, edited in place) the listeners, the report interval and
# down time, the local admin socket for `trustpool` and a feed reader token
# (kept in /etc/trustpool/server/lab-feed-token, 0600 root; the server
# stores only its SHA-256). Used by control.sh (Vagrant lab) and by
# scripts/systemd-test, which runs it in a container booted with systemd.
#   configure-server.sh PKI_DIR EK_ROOTS_DIR GRPC_LISTEN HTTP_LISTEN REPORT_INTERVAL DOWN_TIME
set -euo pipefail
[ $# -eq 6 ] || {
  echo "usage: $0 PKI_DIR EK_ROOTS_DIR GRPC_LISTEN HTTP_LISTEN REPORT_INTERVAL DOWN_TIME" >&2
  exit 2
}
pki=$1 ek_roots=$2 grpc_listen=$3 http_listen=$4 report_interval=$5 down_time=$6

install -m 0644 "$pki/ca.pem" /etc/trustpool/server/agents-ca.pem
install -m 0644 "$pki/server.pem" /etc/trustpool/server/server.pem
install -m 0600 -o trustpool -g trustpool "$pki/server.key" /etc/trustpool/server/server.key
ls "$ek_roots"/*.pem >/dev/null 2>&1 || { echo "no EK roots (*.pem) in $ek_roots" >&2; exit 1; }
install -m 0644 "$ek_roots"/*.pem /etc/trustpool/ek-roots/

sed -e "s|^grpc_listen = .*|grpc_listen = \"$grpc_listen\"|" \
    -e "s|^http_listen = .*|http_listen = \"$http_listen\"|" \
    -e "s|^\(# \)\?report_interval = .*|report_interval = \"$report_interval\"|" \
    -e "s|^\(# \)\?down_time = .*|down_time = \"$down_time\"|" \
    -e 's|^# admin_socket = |admin_socket = |' \
    /etc/trustpool/server.toml >/etc/trustpool/server.toml.new
token_file=/etc/trustpool/server/lab-feed-token
[ -s "$token_file" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
if ! grep -q '^name = "lab"$' /etc/trustpool/server.toml.new; then
  printf '\n# Feed reader of the lab (the token is in %s).\n[[feed_tokens]]\nname = "lab"\nsha256 = "%s"\n' \
    "$token_file" "$(sha256sum <"$token_file" | cut -c1-64)" >>/etc/trustpool/server.toml.new
fi
mv /etc/trustpool/server.toml.new /etc/trustpool/server.toml
chmod 0644 /etc/trustpool/server.toml
