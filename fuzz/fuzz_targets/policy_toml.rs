//! The pool policy loader. Input: policy files as `name NUL text NUL name
//! NUL text ...` (a missing text is empty). No panic on any input; a policy
//! that loads is evaluated against the swtpm host's PCRs with and without a
//! hardening report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use trustpool_evidence::policy::{evaluate, parse_policy_set, HostFacts};
use trustpool_fuzz::swtpm;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let mut files = Vec::new();
    while let Some(name) = parts.next() {
        let text = parts.next().unwrap_or_default();
        files.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(text).into_owned(),
        ));
    }
    let Ok(set) = parse_policy_set(&files) else {
        return;
    };
    let _ = set.union_pcrs();
    let _ = set.check_params();
    let _ = set.digest_hex();
    let pcrs: BTreeMap<u8, [u8; 32]> = trustpool_evidence::pcr::DEFAULT_PCRS
        .iter()
        .zip(swtpm::PCRS.chunks_exact(32))
        .filter_map(|(i, v)| Some((*i, <[u8; 32]>::try_from(v).ok()?)))
        .collect();
    let status: BTreeMap<String, String> =
        [("mac.enforcing_any".to_string(), "pass".to_string())].into();
    let reason: BTreeMap<String, String> =
        [("mac.enforcing_any".to_string(), "enforcing".to_string())].into();
    for pool in set.pools.values() {
        let _ = evaluate(
            pool,
            &HostFacts {
                pcrs: &pcrs,
                check_status: None,
                check_reason: None,
                event_log: None,
                txt_log: None,
            },
        );
        let _ = evaluate(
            pool,
            &HostFacts {
                pcrs: &pcrs,
                check_status: Some(&status),
                check_reason: Some(&reason),
                event_log: None,
                txt_log: None,
            },
        );
    }
});
