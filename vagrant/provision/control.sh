#!/usr/bin/env bash
# Provisions the control VM: trustpool-server with the lab certificates, the
# vTPMs' EK roots, and the `default` pool policy captured from compute1's TPM
# (over ssh), then waits for the computes' agents and prints the trusted pool.
#   control.sh SERVER_IP POLICY_SOURCE_NAME POLICY_SOURCE_IP...
set -euo pipefail
server_ip=$1 source_name=$2 source_ip=$3
export DEBIAN_FRONTEND=noninteractive

echo "== control: packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl openssh-client >/dev/null
apt-get install -y -qq /lab/debs/trustpool-server_*.deb >/dev/null

echo "== control: certificates, EK roots and configuration"
ls /lab/state/ek-roots/*.pem >/dev/null 2>&1 || { echo "no EK roots in /lab/state/ek-roots (host-ek-roots.sh)" >&2; exit 1; }
/lab/provision/configure-server.sh /lab/state/pki /lab/state/ek-roots 0.0.0.0:7443 "$server_ip:8080" 10s 30s
token_file=/etc/trustpool/server/lab-feed-token

echo "== control: pool policy captured from $source_name's TPM"
# PCR 1 holds each VM's SMBIOS tables (its UUID): not pinned, so compute2
# matches the values of compute1. No TXT in a VM: no measured launch.
ssh -i /lab/state/ssh/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  "vagrant@$source_ip" sudo /lab/provision/capture-policy.sh --name "lab-$source_name" \
  --allow 0,2,3,4,5,6,7,17,18,19 --no-measured-launch \
  --require mac.enforcing_any --require svirt.driver_configured >/etc/trustpool/policy/default.toml.new
mv /etc/trustpool/policy/default.toml.new /etc/trustpool/policy/default.toml
cat /etc/trustpool/policy/default.toml

systemctl enable trustpool-server >/dev/null 2>&1
# Type=notify: returns once the database is open, the policy loaded and the listeners bound.
systemctl restart trustpool-server
systemctl --no-pager --lines=5 status trustpool-server

feed="https://$server_ip:8080"
auth=(--cacert /etc/trustpool/server/agents-ca.pem -H "Authorization: Bearer $(cat "$token_file")")
echo "== control: waiting for the computes' verdicts (agents retry every minute at most)"
hosts=""
for _ in $(seq 1 60); do
  hosts=$(curl -fsS "${auth[@]}" "$feed/v1/pools/default/hosts" || true)
  case "$hosts" in *compute1*compute2*|*compute2*compute1*) break ;; esac
  sleep 3
done
echo
echo "Trusted pool 'default' ($feed/v1/pools/default/hosts):"
echo "$hosts"
echo
# Every host with its state and first reason (the CLI over the local admin socket).
trustpool hosts || true
echo
echo "From the host, in vagrant/:"
echo "  curl --cacert .lab/pki/ca.pem -H \"Authorization: Bearer \$(vagrant ssh control -c 'sudo cat $token_file')\" $feed/v1/pools/default/hosts"
echo "  vagrant ssh control -c 'sudo trustpool hosts'"
