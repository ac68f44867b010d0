//! Policy text made from evidence: the `[[allow]]` entry of `policy
//! capture`, and the PCR comparison of `policy diff`. Pure.

use super::timefmt::rfc3339;
use std::collections::BTreeMap;
use trustpool_evidence::pcr::MAX_PCR_INDEX;
use trustpool_proto::v1::PcrValue;

/// Checks the captured values: sha256 digests (32 bytes) of PCR indices the
/// policy language accepts, each once. Returns them sorted by index.
pub fn checked_pcrs(pcrs: &[PcrValue]) -> Result<BTreeMap<u8, [u8; 32]>, String> {
    let mut out = BTreeMap::new();
    for p in pcrs {
        let index = u8::try_from(p.index)
            .ok()
            .filter(|i| *i <= MAX_PCR_INDEX)
            .ok_or_else(|| format!("the server sent PCR index {}, out of range", p.index))?;
        let value = <[u8; 32]>::try_from(p.digest.as_slice()).map_err(|_| {
            format!(
                "the server sent PCR {index} with {} bytes, not a sha256 digest",
                p.digest.len()
            )
        })?;
        if out.insert(index, value).is_some() {
            return Err(format!("the server sent PCR {index} twice"));
        }
    }
    Ok(out)
}

/// The default name of a captured entry: the host and the time of its
/// evidence (`host-a-20261122T140200Z`), unique per capture.
pub fn default_entry_name(hostname: &str, attested_at_ms: i64) -> String {
    let stamp: String = rfc3339(attested_at_ms)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{hostname}-{stamp}")
}

fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The `[[allow]]` entry for the PCR values of one host's latest verified
/// evidence, with a comment line naming the host, the time of the evidence
/// and the time of the capture. Appended to a pool file (whose `pcrs`
/// selection includes these PCRs) it parses with
/// [`trustpool_evidence::policy::parse_pool`]. `only` restricts the entry to
/// those PCRs (empty = every captured PCR); asking for one that was not
/// captured is an error.
pub fn capture_toml(
    hostname: &str,
    attested_at_ms: i64,
    now_ms: i64,
    name: &str,
    pcrs: &BTreeMap<u8, [u8; 32]>,
    only: &[u8],
) -> Result<String, String> {
    if name.trim().is_empty() {
        return Err("the entry name must not be empty".into());
    }
    if pcrs.is_empty() {
        return Err(format!(
            "the evidence of {hostname} holds no sha256 PCR value"
        ));
    }
    let missing: Vec<String> = only
        .iter()
        .filter(|i| !pcrs.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        let have: Vec<String> = pcrs.keys().map(|i| i.to_string()).collect();
        return Err(format!(
            "PCR {} not in the evidence of {hostname} (it has {})",
            missing.join(", "),
            have.join(", ")
        ));
    }
    let mut text = format!(
        "# Captured by `trustpool policy capture` from {}'s verified evidence of {} (captured {}).\n",
        comment_safe(hostname),
        rfc3339(attested_at_ms),
        rfc3339(now_ms)
    );
    text.push_str("[[allow]]\n");
    text.push_str(&format!(
        "name = {}\n",
        toml::Value::String(name.to_string())
    ));
    text.push_str("[allow.pcrs]\n");
    for (index, value) in pcrs {
        if only.is_empty() || only.contains(index) {
            text.push_str(&format!("{index} = \"{}\"\n", hex::encode(value)));
        }
    }
    Ok(text)
}

/// One PCR that differs between two hosts (`None`: not in that host's evidence).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PcrDifference {
    /// PCR index.
    pub index: u8,
    /// Host A's value (hex).
    pub a: Option<String>,
    /// Host B's value (hex).
    pub b: Option<String>,
}

/// The PCRs whose values differ between two hosts' evidence, by index;
/// a PCR only one of them has counts as different.
pub fn diff_pcrs(a: &BTreeMap<u8, [u8; 32]>, b: &BTreeMap<u8, [u8; 32]>) -> Vec<PcrDifference> {
    let indices: std::collections::BTreeSet<u8> = a.keys().chain(b.keys()).copied().collect();
    indices
        .into_iter()
        .filter(|i| a.get(i) != b.get(i))
        .map(|i| PcrDifference {
            index: i,
            a: a.get(&i).map(hex::encode),
            b: b.get(&i).map(hex::encode),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::policy::parse_pool;

    const T: i64 = 1_795_356_120_000; // 2026-11-22T14:02:00Z

    fn pcrs(values: &[(u8, u8)]) -> BTreeMap<u8, [u8; 32]> {
        values.iter().map(|(i, v)| (*i, [*v; 32])).collect()
    }

    fn golden() -> BTreeMap<u8, [u8; 32]> {
        let mut p = pcrs(&[
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (5, 0),
            (6, 0),
            (7, 0),
        ]);
        p.extend(pcrs(&[(17, 0xa1), (18, 0xa2), (19, 0xa3)]));
        p
    }

    const POOL_HEAD: &str = "# pool\nrequire_measured_launch = true\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]\n\n[[allow]]\nname = \"old-build\"\npcrs = { 17 = \"0000000000000000000000000000000000000000000000000000000000000017\", 18 = \"0000000000000000000000000000000000000000000000000000000000000018\" }\n";

    #[test]
    fn captured_entry_appended_to_a_pool_file_parses_to_the_same_values() {
        let name = default_entry_name("host-a", T + 123);
        assert_eq!(name, "host-a-20261122T140200Z");
        let entry =
            capture_toml("host-a", T + 123, T + 60_000, &name, &golden(), &[]).expect("entry");
        assert!(entry.starts_with("# Captured by `trustpool policy capture` from host-a's verified evidence of 2026-11-22T14:02:00Z (captured 2026-11-22T14:03:00Z).\n[[allow]]\n"), "{entry}");
        // Appended as it is, and with a blank line, to a file with and without a trailing newline.
        for joined in [
            format!("{POOL_HEAD}{entry}"),
            format!("{POOL_HEAD}\n{entry}"),
            format!("{}\n{entry}", POOL_HEAD.trim_end()),
            // `>>` onto a file without a final newline: the comment ends its last line.
            format!("{}{entry}", POOL_HEAD.trim_end()),
        ] {
            let pool =
                parse_pool("default.toml", &joined).unwrap_or_else(|e| panic!("{e:?}\n{joined}"));
            assert_eq!(pool.allow.len(), 2);
            assert_eq!(pool.allow[1].name, name);
            assert_eq!(pool.allow[1].pcrs, golden());
        }
        // The entry alone (with a measured-launch-free header) is a pool file too.
        let alone = format!("require_measured_launch = false\n{entry}");
        assert_eq!(
            parse_pool("p.toml", &alone).expect("parses").allow[0].pcrs,
            golden()
        );
    }

    #[test]
    fn capture_restricted_to_some_pcrs_and_odd_names() {
        let entry =
            capture_toml("host-a", T, T, "build \"x\" \\ 2", &golden(), &[17, 18]).expect("entry");
        let pool = parse_pool("p.toml", &format!("{POOL_HEAD}{entry}")).expect("parses");
        assert_eq!(pool.allow[1].name, "build \"x\" \\ 2");
        assert_eq!(
            pool.allow[1].pcrs.keys().copied().collect::<Vec<_>>(),
            vec![17, 18]
        );
        let e = capture_toml("host-a", T, T, "n", &golden(), &[9]).expect_err("not captured");
        assert!(e.contains("PCR 9") && e.contains("17"), "{e}");
        assert!(capture_toml("host-a", T, T, " ", &golden(), &[]).is_err());
        assert!(capture_toml("host-a", T, T, "n", &BTreeMap::new(), &[]).is_err());
        let entry = capture_toml("evil\nhost", T, T, "n", &golden(), &[]).expect("entry");
        assert!(
            parse_pool("p.toml", &format!("{POOL_HEAD}{entry}")).is_ok(),
            "{entry}"
        );
    }

    #[test]
    fn pcr_values_from_the_server_are_checked() {
        let ok = vec![
            PcrValue {
                index: 17,
                digest: vec![1; 32],
            },
            PcrValue {
                index: 0,
                digest: vec![0; 32],
            },
        ];
        assert_eq!(
            checked_pcrs(&ok)
                .expect("ok")
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![0, 17]
        );
        assert!(checked_pcrs(&[PcrValue {
            index: 24,
            digest: vec![0; 32]
        }])
        .is_err());
        assert!(checked_pcrs(&[PcrValue {
            index: 1,
            digest: vec![0; 20]
        }])
        .is_err());
        let twice = vec![ok[0].clone(), ok[0].clone()];
        assert!(checked_pcrs(&twice).is_err());
    }

    #[test]
    fn diff_names_differing_and_missing_pcrs() {
        let a = golden();
        let mut b = golden();
        b.insert(17, [0xff; 32]);
        b.remove(&19);
        b.insert(8, [8; 32]);
        let d = diff_pcrs(&a, &b);
        assert_eq!(
            d.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![8, 17, 19]
        );
        assert_eq!(d[0].a, None);
        assert_eq!(d[1].a.as_deref(), Some(hex::encode([0xa1; 32]).as_str()));
        assert_eq!(d[1].b.as_deref(), Some(hex::encode([0xff; 32]).as_str()));
        assert_eq!(d[2].b, None);
        assert!(diff_pcrs(&a, &a.clone()).is_empty());
    }
}
