#!/usr/bin/env bash
# Captures a pool policy from this host's TPM: reads the sha256 PCRs with
# tpm2_pcrread and prints a policy TOML (README, "Pool policy") whose one
# [[allow]] entry is this host's values.
#
#   capture-policy.sh [--name BUILD] [--allow 0,2,3,...] [--no-measured-launch]
#                     [--require CHECK]... > /etc/trustpool/policy/POOL.toml
#
# --allow      PCRs pinned in the [[allow]] entry (default: all quoted ones,
#              0-7 and 17-19). A VM's PCR 1 holds its SMBIOS tables, UUID
#              included, so the lab leaves it out to admit its sibling VMs.
#              With a measured launch (the default) it must include 17 and
#              18, and the host must show one there (not all-FF, not
#              all-zero): the server refuses such a policy otherwise.
# The TPM is TPM2TOOLS_TCTI's (default /dev/tpmrm0): use
# TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=P for an swtpm.
set -euo pipefail
name="captured-$(hostname)-$(date -u +%Y%m%d)"
allow="0,1,2,3,4,5,6,7,17,18,19"
measured=true
require=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --allow) allow=$2; shift 2 ;;
    --no-measured-launch) measured=false; shift ;;
    --require) require+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--name BUILD] [--allow PCRS] [--no-measured-launch] [--require CHECK]..." >&2; exit 2 ;;
  esac
done

if [ "$measured" = true ]; then
  for p in 17 18; do
    tr ',' '\n' <<<"$allow" | grep -qx "$p" ||
      { echo "capture-policy: --allow must include PCR $p with a measured launch (or give --no-measured-launch)" >&2; exit 2; }
  done
fi

values=$(tpm2_pcrread "sha256:$allow")
# Lines like "    7 : 0x00AB..." or "    17: 0xFF..." (only the sha256 bank was asked).
entries=$(sed -nE 's/^ *([0-9]+) *: *0x([0-9A-Fa-f]+) *$/\1 \2/p' <<<"$values" |
  awk '{ printf "%s%s = \"%s\"", sep, $1, tolower($2); sep = ", " }')
count=$(tr ',' '\n' <<<"$allow" | grep -c .)
got=$(grep -o '= "' <<<"$entries" | wc -l)
if [ "$got" -ne "$count" ]; then
  echo "capture-policy: read $got of $count PCR values from tpm2_pcrread:" >&2
  echo "$values" >&2
  exit 1
fi

if [ "$measured" = true ]; then
  for p in 17 18; do
    v=$(sed -nE "s/^ *$p *: *0x([0-9A-Fa-f]+) *\$/\1/p" <<<"$values")
    if [[ $v =~ ^[Ff]+$ ]]; then
      echo "capture-policy: PCR $p is all-FF: no measured launch on this host; give --no-measured-launch for a host without TXT" >&2
      exit 1
    fi
    if [[ $v =~ ^0+$ ]]; then
      echo "capture-policy: PCR $p is all zeros: a hash start without SINIT/MLE measurements is no measured launch; give --no-measured-launch for a host without TXT" >&2
      exit 1
    fi
  done
fi

checks=""
for c in "${require[@]}"; do checks+="${checks:+, }\"$c\""; done
checks_line="# require_checks = [\"mac.enforcing_any\"]   # hardening checks that must pass"
[ -z "$checks" ] || checks_line="require_checks = [$checks]"
cat <<TOML
# Captured by capture-policy.sh on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)
# from its TPM (tpm2_pcrread sha256:$allow).
require_measured_launch = $measured
pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]
$checks_line

[[allow]]
name = "$name"
pcrs = { $entries }
TOML
