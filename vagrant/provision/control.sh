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

echo "== control: certificates and EK roots"
install -m 0644 /lab/state/pki/ca.pem /etc/trustpool/server/agents-ca.pem
install -m 0644 /lab/state/pki/server.pem /etc/trustpool/server/server.pem
install -m 0600 -o trustpool -g trustpool /lab/state/pki/server.key /etc/trustpool/server/server.key
ls /lab/state/ek-roots/*.pem >/dev/null 2>&1 || { echo "no EK roots in /lab/state/ek-roots (host-ek-roots.sh)" >&2; exit 1; }
install -m 0644 /lab/state/ek-roots/*.pem /etc/trustpool/ek-roots/

echo "== control: pool policy captured from $source_name's TPM"
# PCR 1 holds each VM's SMBIOS tables (its UUID): not pinned, so compute2
# matches the values of compute1. No TXT in a VM: no measured launch.
ssh -i /lab/state/ssh/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  "vagrant@$source_ip" sudo /lab/provision/capture-policy.sh --name "lab-$source_name" \
  --allow 0,2,3,4,5,6,7,17,18,19 --no-measured-launch \
  --require mac.enforcing_any --require svirt.driver_configured >/etc/trustpool/policy/default.toml.new
mv /etc/trustpool/policy/default.toml.new /etc/trustpool/policy/default.toml
cat /etc/trustpool/policy/default.toml

echo "== control: configuration"
sed -e "s|^http_listen = .*|http_listen = \"$server_ip:8080\"|" \
    -e 's|^# report_interval = .*|report_interval = "10s"|' \
    -e 's|^# down_time = .*|down_time = "30s"|' \
    /etc/trustpool/server.toml >/etc/trustpool/server.toml.new
# A feed reader token for the lab, if this server version authenticates readers.
token_file=/etc/trustpool/server/lab-feed-token
if grep -q -- --feed-token <<<"$(trustpool-server --help)"; then
  [ -s "$token_file" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
  printf '\n# Feed reader of the Vagrant lab (the token is in %s).\n[[feed_tokens]]\nname = "lab"\nsha256 = "%s"\n' \
    "$token_file" "$(sha256sum <"$token_file" | cut -c1-64)" >>/etc/trustpool/server.toml.new
fi
mv /etc/trustpool/server.toml.new /etc/trustpool/server.toml
chmod 0644 /etc/trustpool/server.toml

systemctl enable trustpool-server >/dev/null 2>&1
systemctl restart trustpool-server
systemctl --no-pager --lines=5 status trustpool-server

auth=(--cacert /etc/trustpool/server/agents-ca.pem)
[ -s "$token_file" ] && auth+=(-H "Authorization: Bearer $(cat "$token_file")")
# The API listener speaks HTTPS with the server certificate (HTTP in older servers).
feed="https://$server_ip:8080"
for _ in $(seq 1 30); do
  curl -fsS "${auth[@]}" "https://$server_ip:8080/healthz" >/dev/null 2>&1 && { feed="https://$server_ip:8080"; break; }
  curl -fsS "http://$server_ip:8080/healthz" >/dev/null 2>&1 && { feed="http://$server_ip:8080"; break; }
  sleep 1
done
echo "== control: waiting for the computes' verdicts (agents retry every minute at most)"
for _ in $(seq 1 60); do
  hosts=$(curl -fsS "${auth[@]}" "$feed/v1/pools/default/hosts" || true)
  case "$hosts" in *compute1*compute2*|*compute2*compute1*) break ;; esac
  sleep 3
done
echo
echo "Trusted pool 'default' ($feed/v1/pools/default/hosts):"
hint=""
[ -s "$token_file" ] && hint=" -H \"Authorization: Bearer \$(vagrant ssh control -c 'sudo cat $token_file')\""
echo "(from the host, in vagrant/: curl --cacert .lab/pki/ca.pem$hint $feed/v1/pools/default/hosts)"
echo "$hosts"
for h in compute1 compute2; do
  echo "$h: $(curl -fsS "${auth[@]}" "$feed/v1/hosts/$h" || echo 'no verdict yet')"
done
