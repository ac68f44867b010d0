#!/usr/bin/env bash
# Makes a small PKI for trustpool with openssl: a CA, the server's
# certificate and one client certificate per agent host (EC P-256 keys,
# mode 0600). Used on the host by the Vagrant lab and by scripts/package-test.
#
#   make-pki.sh DIR SERVER_NAME[,NAME|IP...] HOST...
#
# DIR/ca.pem, ca.key                 the CA (issues both server and agents)
# DIR/server.pem, server.key         SAN = the names and IPs given
# DIR/hosts/HOST.pem, HOST.key       SAN DNS = HOST (the name Nova knows)
# Existing files are kept, so running it again only adds missing hosts.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR SERVER_NAME[,NAME|IP...] HOST..." >&2; exit 2; }
dir=$1 server_names=$2
shift 2
umask 077
mkdir -p "$dir/hosts"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

if [ ! -s "$dir/ca.pem" ]; then
  new_key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=trustpool lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem"
fi

# issue STEM CN SAN EKU
issue() {
  local stem=$1 cn=$2 san=$3 eku=$4 ext
  [ -s "$stem.pem" ] && return 0
  new_key "$stem.key"
  ext=$(mktemp)
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$eku" "$san" >"$ext"
  openssl req -new -key "$stem.key" -subj "/CN=$cn" -out "$stem.csr"
  openssl x509 -req -in "$stem.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -sha256 -days 825 -extfile "$ext" -out "$stem.pem" 2>/dev/null
  rm -f "$stem.csr" "$ext"
}

san=""
IFS=, read -r -a names <<<"$server_names"
for n in "${names[@]}"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="${san:+,}IP:$n"; else san+="${san:+,}DNS:$n"; fi
done
issue "$dir/server" "${names[0]}" "$san" serverAuth
for host in "$@"; do
  issue "$dir/hosts/$host" "$host" "DNS:$host" clientAuth
done
chmod 644 "$dir/ca.pem" "$dir/server.pem" "$dir"/hosts/*.pem
