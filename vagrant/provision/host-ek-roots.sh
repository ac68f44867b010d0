#!/usr/bin/env bash
# Vagrant trigger, on the host before the control VM comes up (the computes
# exist by then): copies the CA that signed the vTPMs' EK certificates. libvirt
# runs swtpm_setup --create-ek-cert with the host's swtpm_localca, whose root
# and intermediate live in /var/lib/swtpm-localca (readable by root and the
# swtpm user only, hence sudo). The control VM installs them as its EK roots.
#   host-ek-roots.sh LAB_DIR
set -euo pipefail
lab=$1
ca=/var/lib/swtpm-localca
mkdir -p "$lab/ek-roots"
for f in swtpm-localca-rootca-cert.pem issuercert.pem; do
  # shellcheck disable=SC2024 # read as root, written as the user on purpose
  if ! sudo cat "$ca/$f" >"$lab/ek-roots/$f.tmp"; then
    rm -f "$lab/ek-roots/$f.tmp"
    echo "Cannot read $ca/$f on this host. It exists once libvirt created a vTPM" >&2
    echo "(vagrant up compute1 first); copy it into $lab/ek-roots/ by hand if sudo is not available." >&2
    exit 1
  fi
  mv "$lab/ek-roots/$f.tmp" "$lab/ek-roots/$f"
done
echo "EK roots of the vTPMs: $(ls "$lab/ek-roots" | tr '\n' ' ')"
