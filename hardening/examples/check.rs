//! Runs the hardening checks and prints a table or JSON.
//!
//! `cargo run -p trustpool-hardening --example check -- [ROOT] [compute|other] [table|json] [--fixture good|apparmor-disabled DIR]`
use std::path::Path;

use trustpool_hardening::{fixture, open_host, run_checks, CheckParams, Role};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--fixture") {
        let (Some(kind), Some(dir)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: --fixture good|apparmor-disabled DIR");
            std::process::exit(2);
        };
        let res = match kind.as_str() {
            "good" => fixture::good_compute_host(Path::new(dir)),
            "apparmor-disabled" => fixture::apparmor_disabled_host(Path::new(dir)),
            other => {
                eprintln!("unknown fixture {other}");
                std::process::exit(2);
            }
        };
        if let Err(e) = res {
            eprintln!("{e}");
            std::process::exit(2);
        }
        return;
    }
    let root = args.first().map(String::as_str).unwrap_or("/");
    let role: Role = match args.get(1).map(|s| s.parse()) {
        None => Role::Other,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let host = match open_host(Path::new(root)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot open {root}: {e}");
            std::process::exit(2);
        }
    };
    let params = CheckParams {
        trust_container_view: std::env::var_os("TRUST_CONTAINER_VIEW").is_some(),
        ..CheckParams::default()
    };
    let t = std::time::Instant::now();
    let report = run_checks(host.as_ref(), role, &params);
    let took = t.elapsed();
    if args.get(2).map(String::as_str) == Some("json") {
        println!("{}", String::from_utf8_lossy(&report.canonical_bytes()));
    } else {
        print!("{}", report.render_table());
        eprintln!(
            "took {took:?}, {} bytes canonical",
            report.canonical_bytes().len()
        );
    }
    std::process::exit(report.exit_code());
}
