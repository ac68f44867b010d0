#!/usr/bin/env bash
# Vagrant trigger, on the host before any VM comes up: the lab PKI (CA,
# server certificate for trustpool-server and the lab IP, one client
# certificate per compute) and an ssh key that lets the control VM read
# compute1's PCRs. Kept in vagrant/.lab/ across runs; `rm -rf .lab` to start over.
#   host-prepare.sh LAB_DIR SERVER_IP COMPUTE...
set -euo pipefail
lab=$1 server_ip=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
command -v openssl >/dev/null || { echo "the lab needs openssl on the host" >&2; exit 1; }
mkdir -p "$lab/ssh" "$lab/ek-roots"
"$here/make-pki.sh" "$lab/pki" "trustpool-server,$server_ip" "$@"
[ -s "$lab/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C "trustpool lab" -f "$lab/ssh/id_ed25519"
if ! ls "$here"/../../target/debian/trustpool-agent_*.deb "$here"/../../target/debian/trustpool-server_*.deb >/dev/null 2>&1; then
  echo "No packages in target/debian/: run scripts/package in the repository first." >&2
  exit 1
fi
