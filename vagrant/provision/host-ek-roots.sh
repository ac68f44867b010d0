#!/usr/bin/env bash
# Vagrant trigger, on the host before the control VM comes up (the computes
# exist by then): copies the CA that signed the vTPMs' EK certificates. libvirt
# runs swtpm_setup --create-ek-cert with the host's swtpm_localca, whose root
# and intermediate live in /var/lib/swtpm-localca (a directory only root
# and the swtpm user may enter, hence sudo unless run as root). The control
# VM installs them as its EK roots.
#   host-ek-roots.sh LAB_DIR
set -euo pipefail
lab=$1
ca=/var/lib/swtpm-localca
mkdir -p "$lab/ek-roots"
# read_ca FILE: the file as this user if it may, else through sudo.
read_ca() {
  if [ -r "$1" ]; then
    cat "$1"
  elif [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
    sudo cat "$1"
  else
    return 1
  fi
}
for f in swtpm-localca-rootca-cert.pem issuercert.pem; do
  if ! read_ca "$ca/$f" >"$lab/ek-roots/$f.tmp"; then
    rm -f "$lab/ek-roots/$f.tmp"
    echo "Cannot read $ca/$f on this host. It exists once libvirt created a vTPM" >&2
    echo "(vagrant up compute1 first); copy it into $lab/ek-roots/ by hand if sudo is not available." >&2
    exit 1
  fi
  mv "$lab/ek-roots/$f.tmp" "$lab/ek-roots/$f"
done
echo "EK roots of the vTPMs: $(ls "$lab/ek-roots" | tr '\n' ' ')"
