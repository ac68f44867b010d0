//! No panics and no hangs on hostile host content.

use trustpool_hardening::fixture::FixtureBuilder;
use trustpool_hardening::{open_host, run_checks, CheckParams, Role, Status};

use super::*;

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b" \t\n\0:,()[]=\"'#;-+.0123456789abcdefxyzYNQ/\\\xff\xfe";
        (0..n)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
            .collect()
    }
}

fn mutate(seed: u64, f: impl Fn(&mut Rng, &[u8]) -> Vec<u8>) -> FixtureBuilder {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let base = good();
    let mut b = base.clone();
    for p in base.files() {
        let old = base.content(&p).unwrap_or_default().to_vec();
        let new = f(&mut rng, &old);
        b = b.file(&p, new);
    }
    b
}

#[test]
fn garbage_everywhere_never_panics() {
    for seed in 1..=6u64 {
        let b = mutate(seed, |rng, _| {
            let n = (rng.next() % 200) as usize;
            rng.bytes(n)
        });
        for role in [Role::Compute, Role::Other] {
            let r = run(&b, role);
            assert!(!r.results.is_empty());
        }
    }
}

#[test]
fn truncated_and_flipped_files_never_panic() {
    for seed in 1..=4u64 {
        let b = mutate(seed, |rng, old| {
            let mut v = old.to_vec();
            if !v.is_empty() {
                let cut = (rng.next() as usize) % v.len();
                v.truncate(cut.max(1));
                let i = (rng.next() as usize) % v.len();
                v[i] ^= 0x20;
            }
            v
        });
        run(&b, Role::Compute);
    }
}

#[test]
fn huge_values_are_capped() {
    let big = "x".repeat(200_000);
    let r = run(
        &good()
            .file("/sys/kernel/security/lsm", &big)
            .file("/proc/cmdline", &big),
        Role::Compute,
    );
    for x in &r.results {
        for e in &x.evidence {
            assert!(
                e.value.len() < 4200,
                "{}: evidence of {} bytes",
                x.id,
                e.value.len()
            );
        }
    }
}

#[test]
fn special_files_do_not_hang() {
    let dir = tempdir();
    good()
        .remove("/proc/cmdline")
        .remove("/sys/kernel/mm/ksm/run")
        .build(dir.path())
        .expect("build");
    nix::unistd::mkfifo(
        &dir.path().join("proc/cmdline"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    std::fs::create_dir_all(dir.path().join("sys/kernel/mm/ksm")).expect("mkdir");
    std::os::unix::fs::symlink("run", dir.path().join("sys/kernel/mm/ksm/run"))
        .expect("symlink loop");
    std::os::unix::fs::symlink(
        "/../../../../etc/hostname",
        dir.path().join("sys/kernel/security/lockdown.escape"),
    )
    .expect("symlink");
    let host = open_host(dir.path()).expect("open");
    let r = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
    assert_eq!(
        res(&r, "iommu.active").status,
        Status::Error,
        "{}",
        res(&r, "iommu.active").reason
    );
    assert_eq!(
        res(&r, "mem.ksm_off").status,
        Status::Error,
        "{}",
        res(&r, "mem.ksm_off").reason
    );
    assert!(res(&r, "mem.ksm_off").reason.contains("ELOOP"));
    // Absolute symlinks resolve inside the root, never to the agent's /etc.
    assert!(host.read("/sys/kernel/security/lockdown.escape").is_err());
}
