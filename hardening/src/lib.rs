//! Host-hardening checks of trustpool (HARDENING-CHECKS.md).
//!
//! The agent runs these checks besides the TPM quote and binds the report to the
//! quote through [`Report::canonical_bytes`]. Every check reads the host through a
//! [`HostView`] rooted at a prefix (default `/`, like Lynis' `ROOTDIR`), so the same
//! code checks the live host, a host mounted at `/host`, or a fixture tree built
//! with [`fixture::FixtureBuilder`].
//!
//! ```no_run
//! use std::path::Path;
//! use trustpool_hardening::{open_host, run_checks, CheckParams, Role};
//!
//! let host = open_host(Path::new("/")).expect("root is readable");
//! let report = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
//! print!("{}", report.render_table());
//! std::process::exit(report.exit_code());
//! ```
//!
//! Result states follow XCCDF (catalogue §1.1): `fail` needs positive evidence; a
//! fact this view cannot see is `unknown`; `notapplicable` only when a precondition
//! is proven false; `error` when the agent itself failed (parse error, unexpected
//! format, I/O error other than ENOENT/EACCES/EPERM). When the view carries
//! container markers, every host-scoped check is `unknown` (catalogue §1.2) unless
//! [`CheckParams::trust_container_view`] is set.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod checks;
pub mod fixture;
pub mod host;
mod kvm_ioctl;
mod params;
#[cfg(not(feature = "fuzzing"))]
mod parse;
/// The /proc and /sys text parsers, public only for the fuzz targets
/// (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod parse;
mod report;

pub use checks::{check_catalogue, run_checks, CheckInfo};
pub use host::{
    open as open_host, FileKind, HostError, HostErrorKind, HostView, Manifest, Metadata,
    MountEntry, RealHost, VfsStat, ViewKind,
};
pub use params::{CheckParams, MacSelection, ParamsError, SysctlExpect};
pub use report::{
    family_of, summarize, CheckResult, Evidence, ParseEnumError, Report, ReportError,
    RequiredFailure, Role, Severity, Status, FAMILIES, MAX_EVIDENCE_VALUE, MAX_REPORT_BYTES,
};
