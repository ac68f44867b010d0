//! The hardening parsers of /proc, /sys and configuration files. The first
//! byte picks the parser (mod 15), the rest is the file content. No panic
//! (and no runaway) on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_hardening::parse;
use trustpool_hardening::{CheckParams, SysctlExpect};

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    match which % 15 {
        0 => {
            let _ = parse::mountinfo(&text);
        }
        1 => {
            if let Ok(conf) = parse::libvirt_conf(&text) {
                for key in [
                    "security_driver",
                    "user",
                    "group",
                    "dynamic_ownership",
                    "cgroup_device_acl",
                ] {
                    if let Some(v) = conf.get(key) {
                        let _ = v.render();
                    }
                }
            }
        }
        2 => {
            if let Ok(ini) = parse::ini(&text) {
                let _ = ini.get("libvirt", "virt-type");
                let _ = ini.get("DEFAULT", "my_ip");
            }
        }
        3 => {
            let _ = parse::id_file(&text);
        }
        4 => {
            let _ = parse::proc_net_tcp(&text);
        }
        5 => {
            let _ = parse::apparmor_profiles(&text);
        }
        6 => {
            let _ = parse::split_label(&text);
        }
        7 => {
            let _ = parse::status_ids(&text, "Uid");
            let _ = parse::status_ids(&text, "Gid");
        }
        8 => {
            let _ = parse::cmdline_args(body);
        }
        9 => {
            let _ = parse::efivar_byte(body);
        }
        10 => {
            let _ = parse::cpuinfo_flags(&text);
        }
        11 => {
            // `pattern NUL subject`, as the checks match profile names.
            let (pattern, subject) = text.split_once('\0').unwrap_or((&text, ""));
            let _ = parse::glob_match(pattern, subject);
        }
        12 => {
            let _ = SysctlExpect::parse(&text).map(|e| e.accepts(1));
        }
        13 => {
            // [check_params] as the agent receives them in a challenge.
            if let Ok(p) = serde_json::from_str::<CheckParams>(&text) {
                let _ = p.validate();
            }
        }
        _ => {
            let _ = CheckParams::from_toml_str(&text).map(|p| p.validate());
        }
    }
});
