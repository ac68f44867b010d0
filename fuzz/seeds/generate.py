#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/) from the
real swtpm vectors: evidence/testdata/swtpm and fuzz/testdata. Run from any
directory; the output is committed (a few KB per target). The structured
layouts are the ones documented at the top of each fuzz_targets/*.rs."""
import hashlib
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(HERE)
ROOT = os.path.dirname(FUZZ)
SWTPM = os.path.join(ROOT, "evidence", "testdata", "swtpm")
EVENTLOGS = os.path.join(ROOT, "evidence", "testdata", "eventlog")
BOUND = os.path.join(FUZZ, "testdata")
DEFAULT_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def sw(name):
    return read(SWTPM, name)


def bd(name):
    return read(BOUND, name)


def u16(b):
    return struct.pack(">H", len(b)) + b


def pem_der(name):
    import base64
    text = sw(name).decode()
    body = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.b64decode("".join(body.split()))


def pcr_entries(raw, indices=DEFAULT_PCRS):
    out = b""
    for i, idx in enumerate(indices):
        out += bytes([idx, 32]) + raw[32 * i:32 * i + 32]
    return out


# protobuf (proto3) encoding of the few messages the agent sends.
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def hello(hostname, ek, ak, cert=b"", chain=()):
    m = field(1, hostname.encode()) + field(2, b"0.1.0") + field(3, ek)
    if cert:
        m += field(4, cert)
    m += field(5, ak)
    for c in chain:
        m += field(6, c)
    return field(1, m)


def activation(secret):
    return field(2, field(1, secret))


def evidence(nonce, attest, sig, pcrs_raw, report):
    m = field(1, nonce) + field(2, attest) + field(3, sig)
    for i, idx in enumerate(DEFAULT_PCRS):
        v = (varint(1 << 3 | 0) + varint(idx) if idx else b"") + field(2, pcrs_raw[32 * i:32 * i + 32])
        m += field(4, v)
    m += field(5, report)
    return field(3, m)


def challenge_request(reason):
    return field(4, field(1, reason.encode()))


def delimited(*msgs):
    return b"".join(varint(len(m)) + m for m in msgs)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for target in os.listdir(HERE):
        if os.path.isdir(os.path.join(HERE, target)):
            shutil.rmtree(os.path.join(HERE, target))
    quotes = [("rsa", 0), ("ecc", 1), ("pss", 2)]
    pcrs = sw("pcrs.bin")
    for kind, _ in quotes:
        write("tpm_attest", kind, sw(f"quote_{kind}.attest"))
        write("tpm_signature", kind, sw(f"quote_{kind}.sig"))
    for kind in ("rsa", "ecc"):
        write("tpm_attest", f"bound_{kind}", bd(f"quote_{kind}.attest"))
        write("tpm_signature", f"bound_{kind}", bd(f"quote_{kind}.sig"))
    for name in ("ak_rsa", "ak_ecc", "ak_pss", "ek_rsa", "ek_p256", "ek_p384"):
        b = sw(f"{name}.pub")
        write("tpm_public", f"{name}_tpmt", b"\x00" + b[2:])
        write("tpm_public", f"{name}_2b", b"\x01" + b)
    for kind, ak in quotes:
        base = bytes([ak, 0]) + u16(sw(f"quote_{kind}.attest")) + u16(sw(f"quote_{kind}.sig"))
        write("verify_quote", kind, base + pcr_entries(pcrs))
        # Explicit selection and extraData, in the flags' layout.
        sel = bytes(DEFAULT_PCRS)
        nonce = bytes(range(1, 33))
        explicit = bytes([ak, 3]) + base[2:] + bytes([len(sel)]) + sel + bytes([32]) + nonce
        write("verify_quote", f"{kind}_explicit", explicit + pcr_entries(pcrs))
    root, issuer = pem_der("rootca.pem"), pem_der("issuercert.pem")
    write("ek_certificate", "rsa", b"\x00" + u16(sw("ek_rsa_cert.der")))
    write("ek_certificate", "p384", b"\x02" + u16(sw("ek_p384_cert.der")))
    write("ek_certificate", "rsa_agent_intermediate", b"\x04" + u16(sw("ek_rsa_cert.der")) + u16(issuer))
    write("ek_certificate", "p384_roots_dir", b"\x0a" + u16(sw("ek_p384_cert.der")) + u16(root) + u16(issuer))
    write("policy_toml", "example", b"default.toml\x00" + read(os.path.join(ROOT, "packaging"), "policy-example.toml"))
    write("policy_toml", "fuzz", b"compute.toml\x00" + bd("policy.toml"))
    write("policy_toml", "two_pools_params",
          b"a.toml\x00require_measured_launch = false\npcrs = [0, 17]\n[check_params]\nmac = \"apparmor\"\n"
          b"[[allow]]\nname = \"x\"\npcrs = { 0 = \"" + b"00" * 32 + b"\" }\n"
          b"\x00b.toml\x00pcrs = [7]\n[check_params]\nmac = \"apparmor\"\n[[allow]]\nname = \"y\"\n")
    write("hardening_report", "bound", bd("report.json"))
    write("hardening_report", "empty_results",
          b'{"role":"other","root":"/host","results":[],"summary":{"error":0,"fail":0,"informational":0,'
          b'"notapplicable":0,"notchecked":0,"pass":0,"unknown":0},"params_digest":"' + b"ab" * 32 + b'"}')
    parsers = {
        0: b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n36 22 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
           b"40 22 0:31 / /mnt/a\\040b rw - tmpfs none rw\n",
        1: b'security_driver = "apparmor"\nuser = "libvirt-qemu"\ngroup = "kvm"\ndynamic_ownership = 1\n'
           b'cgroup_device_acl = [\n  "/dev/null", "/dev/full",\n]\n',
        2: b"[DEFAULT]\nmy_ip = 10.0.0.1\n[libvirt]\nvirt_type = kvm\n  continued\n; comment\nimages_type: 'qcow2'\n",
        3: b"root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\n+nis\n",
        4: b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
           b"   0: 00000000:40A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n",
        5: b"/usr/sbin/libvirtd (enforce)\nlibvirt-0f1e2d3c-aaaa-bbbb-cccc-123456789abc (enforce)\nunconfined\n",
        6: b"libvirt-0f1e2d3c-aaaa-bbbb-cccc-123456789abc (enforce)",
        7: b"Name:\tqemu-system-x86\nUid:\t64055\t64055\t64055\t64055\nGid:\t108\t108\t108\t108\n",
        8: b"BOOT_IMAGE=/vmlinuz\x00intel_iommu=on\x00apparmor=1\x00",
        9: b"\x06\x00\x00\x00\x01",
        10: b"processor\t: 0\nflags\t\t: fpu vme vmx smx ept\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n",
        11: b"libvirt-*\x00libvirt-0f1e2d3c",
        12: b">=1",
        13: b'{"mac":"apparmor"}',
        14: b'mac = "apparmor"\n[sysctl]\n"kernel.kptr_restrict" = ">=1"\n',
    }
    for which, body in parsers.items():
        write("hardening_parsers", f"p{which:02}", bytes([which]) + body)
    # agent_message: real streams.
    tpmt = lambda b: b[2:]
    ek, akr, ake = tpmt(bd("ek_rsa.pub")), tpmt(bd("ak_rsa.pub")), tpmt(bd("ak_ecc.pub"))
    nonce = bytes(range(0xA0, 0xC0))
    report = bd("report.json")
    bpcrs = bd("pcrs.bin")
    for kind, ak in (("rsa", akr), ("ecc", ake)):
        ev = evidence(nonce, bd(f"quote_{kind}.attest"), bd(f"quote_{kind}.sig"), bpcrs, report)
        write("agent_message", f"trusted_{kind}", delimited(hello("compute-01", ek, ak), ev))
        write("agent_message", f"replay_{kind}",
              delimited(hello("Compute-01", ek, ak), ev, challenge_request("pcr 18 changed"), ev))
    # A new host: enrolment with the swtpm EK, its certificate and the intermediate.
    write("agent_message", "enrol",
          delimited(hello("compute-01", tpmt(sw("ek_rsa.pub")), tpmt(sw("ak_rsa.pub")),
                          sw("ek_rsa_cert.der"), [issuer]),
                    activation(bytes([0x5A] * 32))))
    write("agent_message", "enrol_p384",
          delimited(hello("compute-01", tpmt(sw("ek_p384.pub")), tpmt(sw("ak_ecc.pub")), sw("ek_p384_cert.der")),
                    activation(bytes([0x5A] * 32))))
    # event_log: the test event logs (synthetic, and real ones beside them).
    for r, _, fs in sorted(os.walk(EVENTLOGS)):
        for f in sorted(fs):
            if f.startswith("README") or f.endswith((".md", ".txt", ".yaml", ".json")):
                continue
            rel = os.path.relpath(os.path.join(r, f), EVENTLOGS).replace(os.sep, "_")
            write("event_log", rel, read(r, f))
    hd = hashlib.sha256(b"".join(open(os.path.join(r, f), "rb").read()
                                  for r, _, fs in sorted(os.walk(HERE)) for f in sorted(fs)
                                  if not f.endswith(".py"))).hexdigest()
    print("seeds written, digest", hd[:16])


if __name__ == "__main__":
    main()
