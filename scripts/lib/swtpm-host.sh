# shellcheck shell=bash
# Sourced by scripts/package-test and scripts/systemd-test: free loopback
# ports, and one swtpm-backed "host" with EK certificates, a simulated TXT
# measured launch and a pool policy captured from it.
#
# The caller defines fail() (prints and exits) and $work (a temporary
# directory it removes, killing "$work/swtpm.pid" first).
: "${work:?scripts/lib/swtpm-host.sh needs \$work}"

# Ports below the kernel's ephemeral range, which outgoing connections use.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
taken=" "

# free_port: sets $port to a free port P with P+1 free too (swtpm's control
# port), none handed out before by this shell.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (ephemeral_low - 10002)))
    [[ $taken == *" $p "* || $taken == *" $((p + 1)) "* ]] && continue
    if ! (: >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (: >"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      taken+="$p $((p + 1)) "
      port=$p
      return
    fi
  done
  fail "no free port"
}

# swtpm_provision: an swtpm state in $work/tpm with EK certificates
# (RSA-2048 and ECC P-384, signed by a fresh swtpm_localca in $work/ekca),
# as libvirt makes them for a vTPM; the EK CA (root and issuer) is copied to
# $work/ek-roots/*.pem.
swtpm_provision() {
  mkdir -p "$work/ekca" "$work/tpm" "$work/ek-roots" "$work/policy"
  cat >"$work/swtpm-localca.conf" <<CONF
statedir = $work/ekca
signingkey = $work/ekca/signkey.pem
issuercert = $work/ekca/issuercert.pem
certserial = $work/ekca/certserial
CONF
  echo "--platform-manufacturer trustpool --platform-version 2.1 --platform-model QEMU" >"$work/swtpm-localca.options"
  cat >"$work/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/swtpm-localca.conf
create_certs_tool_options = $work/swtpm-localca.options
active_pcr_banks = sha256
CONF
  swtpm_setup --tpm2 --tpmstate "$work/tpm" --create-ek-cert --create-platform-cert --create-spk \
    --lock-nvram --overwrite --pcr-banks sha256 --config "$work/swtpm_setup.conf" >"$work/swtpm_setup.log" 2>&1 ||
    { cat "$work/swtpm_setup.log"; fail "swtpm_setup --create-ek-cert"; }
  cp "$work/ekca/swtpm-localca-rootca-cert.pem" "$work/ekca/issuercert.pem" "$work/ek-roots/"
  chmod -R a+rX "$work/ek-roots"
}

# tpm_pcr_extend_raw PORT PCR DIGEST_HEX: TPM2_PCR_Extend of the sha256 bank,
# sent as raw bytes on swtpm's data channel, so it runs at the locality set
# on the control channel (every tpm2-tools command resets it to 0 through
# the swtpm TCTI). Fails with the TPM's response code.
tpm_pcr_extend_raw() {
  local port=$1 pcr=$2 digest=$3 cmd reply
  # TPM_ST_SESSIONS, size 65, TPM_CC_PCR_Extend, pcrHandle, authorizationSize 9
  # (TPM_RS_PW, empty nonce, no attributes, empty password), TPML_DIGEST_VALUES
  # { count 1, TPM_ALG_SHA256, digest }.
  cmd="8002""00000041""00000182""$(printf '%08x' "$pcr")""00000009""40000009""0000""00""0000""00000001""000b""$digest"
  [ ${#cmd} -eq 130 ] || fail "tpm_pcr_extend_raw: digest must be 64 hex characters"
  # One write(2): swtpm takes what one read returns as the command.
  printf '%b' "$(sed 's/../\\x&/g' <<<"$cmd")" >"$work/pcr-extend.bin"
  exec 9<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to swtpm on port $port"
  dd if="$work/pcr-extend.bin" bs=65 count=1 status=none >&9
  reply=$(head -c 10 <&9 | od -An -tx1 | tr -d ' \n')
  exec 9<&-
  [ "${reply:12:8}" = 00000000 ] || fail "TPM2_PCR_Extend($pcr) failed: response $reply"
}

# swtpm_host NAME: swtpm_provision, then the swtpm started on
# 127.0.0.1:$tpm_port (control port $tpm_port+1), a simulated TXT measured
# launch (PCR 17 = H(0^32 || H(SINIT)), PCR 18 = H(0^32 || H(MLE))), and
#   $work/policy/default.toml  a policy whose [[allow]] entry NAME is the
#                              host's PCRs 0-7 and 17-19 (capture-policy.sh)
# Sets $tpm_port and $tpm_tcti.
swtpm_host() {
  local name=$1
  swtpm_provision
  local attempt
  for attempt in 1 2 3; do
    free_port
    tpm_port=$port
    swtpm socket --tpm2 --server "type=tcp,port=$tpm_port,bindaddr=127.0.0.1" \
      --ctrl "type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1" --flags not-need-init,startup-clear \
      --tpmstate "dir=$work/tpm" --daemon --pid "file=$work/swtpm.pid" --log "file=$work/swtpm.log" && break
    [ "$attempt" -lt 3 ] || { cat "$work/swtpm.log"; fail "swtpm did not start"; }
  done
  for _ in $(seq 1 50); do (: >"/dev/tcp/127.0.0.1/$tpm_port") 2>/dev/null && break; sleep 0.1; done
  tpm_tcti="swtpm:host=127.0.0.1,port=$tpm_port"
  # A simulated TXT measured launch: the locality-4 hash start (PCR 17 =
  # H(0^32 || H(SINIT)), PCR 18-22 = 0), then the MLE measured into PCR 18 at
  # locality 2 as tboot does (a PCR 18 left at 0 is no measured launch).
  swtpm_ioctl --tcp "127.0.0.1:$((tpm_port + 1))" -h "trustpool $name SINIT"
  swtpm_ioctl --tcp "127.0.0.1:$((tpm_port + 1))" -l 2
  tpm_pcr_extend_raw "$tpm_port" 18 "$(printf 'trustpool %s MLE' "$name" | sha256sum | cut -d' ' -f1)"
  swtpm_ioctl --tcp "127.0.0.1:$((tpm_port + 1))" -l 0
  TPM2TOOLS_TCTI="$tpm_tcti" vagrant/provision/capture-policy.sh --name "$name" >"$work/policy/default.toml"
  chmod -R a+rX "$work/ek-roots" "$work/policy"
}
