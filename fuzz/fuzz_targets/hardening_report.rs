//! The hardening report decoder (`Report::from_slice`, what the server
//! reads from an agent) and the server's `parse_report`. No panic on any
//! input; a report that decodes re-encodes canonically and decodes to
//! itself, and everything the server and agent compute from it works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_hardening::Report;
use trustpool_server::verify::report::parse_report;

fuzz_target!(|data: &[u8]| {
    let decoded = Report::from_slice(data);
    let via_server = parse_report(data);
    assert_eq!(
        decoded.is_ok() || data.is_empty(),
        via_server.is_ok(),
        "the server's report parse disagrees with Report::from_slice"
    );
    let Ok(report) = decoded else {
        return;
    };
    let canonical = report.canonical_bytes();
    assert_eq!(
        Report::from_slice(&canonical).as_ref(),
        Ok(&report),
        "canonical bytes do not decode to the same report"
    );
    let _ = report.digest();
    let statuses = report.status_map();
    let _ = Report::changed_ids(&statuses, &std::collections::BTreeMap::new());
    let _ = report.failed_required(&["mac.enforcing_any", "kvm.present", ""]);
    let _ = report.container();
    let _ = report.exit_code();
    let _ = report.render_table();
});
