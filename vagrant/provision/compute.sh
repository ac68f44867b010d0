#!/usr/bin/env bash
# Provisions a compute VM: a KVM/libvirt host (nested) with tpm2-tools and
# the trustpool-agent package, its certificate, its configuration, and the
# agent service started. Runs as root inside the VM.
#   compute.sh NAME SERVER_IP [SERVER_PORT]   (gRPC port, default 7443)
set -euo pipefail
name=$1 server_ip=$2 server_port=${3:-7443}
export DEBIAN_FRONTEND=noninteractive

echo "== $name: packages (KVM/libvirt, tpm2-tools, the agent)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends qemu-system-x86 libvirt-daemon-system \
  tpm2-tools apparmor apparmor-utils curl >/dev/null
apt-get install -y -qq /lab/debs/trustpool-agent_*.deb >/dev/null

echo "== $name: TPM"
ls -l /dev/tpmrm0
tpm2_getcap properties-fixed | grep -A2 TPM2_PT_MANUFACTURER | head -3 || true

grep -q " trustpool-server\$" /etc/hosts || echo "$server_ip trustpool-server" >>/etc/hosts

echo "== $name: certificate and configuration"
/lab/provision/configure-agent.sh /lab/state/pki "$name" "https://trustpool-server:$server_port"

# The control VM reads this node's PCRs over ssh to capture the policy.
install -d -m 0700 -o vagrant -g vagrant ~vagrant/.ssh
grep -qf /lab/state/ssh/id_ed25519.pub ~vagrant/.ssh/authorized_keys 2>/dev/null ||
  cat /lab/state/ssh/id_ed25519.pub >>~vagrant/.ssh/authorized_keys

echo "== $name: hardening checks (run as root here; the service's own results are in its verdicts)"
trustpool-agent check --format table | grep -E "mac.enforcing_any|svirt.driver_configured|kvm.api|tpm.present" || true

systemctl enable trustpool-agent >/dev/null 2>&1
systemctl restart trustpool-agent
systemctl --no-pager --lines=3 status trustpool-agent || true
echo "== $name: agent running; it attests once the server is up (it retries with back-off)"
