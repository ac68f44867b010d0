//! Parsers for the kernel and configuration formats the checks read. Every parser
//! returns an error string for unexpected input and never panics.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::MountEntry;

/// Decodes the octal escapes (`\040`) used in mountinfo fields.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/PID/mountinfo`.
pub fn mountinfo(text: &str) -> Result<Vec<MountEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| format!("mountinfo line {}: no ' - ' separator", n + 1))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(format!("mountinfo line {}: too few fields", n + 1));
        }
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("mountinfo line {}: bad number {s:?}", n + 1))
        };
        out.push(MountEntry {
            mount_id: num(fields[0])?,
            parent_id: num(fields[1])?,
            root: unescape_octal(fields[3]),
            mount_point: unescape_octal(fields[4]),
            fs_type: unescape_octal(fields[sep + 1]),
            source: unescape_octal(fields[sep + 2]),
        });
    }
    Ok(out)
}

/// A value in libvirt's configuration syntax (`qemu.conf`, `libvirtd.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfValue {
    /// A quoted string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A `[ ... ]` list.
    List(Vec<ConfValue>),
}

impl ConfValue {
    /// Renders the value back in conf syntax (for evidence).
    pub fn render(&self) -> String {
        match self {
            ConfValue::Str(s) => format!("\"{s}\""),
            ConfValue::Int(i) => i.to_string(),
            ConfValue::List(v) => format!(
                "[{}]",
                v.iter()
                    .map(ConfValue::render)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The string, if this is a string.
    #[cfg(test)]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ConfValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    #[cfg(test)]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ConfValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A parsed libvirt configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibvirtConf {
    /// Entries in file order.
    pub entries: Vec<(String, ConfValue)>,
}

impl LibvirtConf {
    /// The value of `key`; like libvirt's `virConfGetValue`, the first occurrence wins.
    pub fn get(&self, key: &str) -> Option<&ConfValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

struct ConfParser<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

impl ConfParser<'_> {
    fn cur(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) {
        if self.cur() == Some(b'\n') {
            self.line += 1;
        }
        self.i += 1;
    }

    fn err(&self, msg: &str) -> String {
        format!("line {}: {msg}", self.line)
    }

    fn skip_blanks(&mut self) {
        while matches!(self.cur(), Some(b' ' | b'\t' | b'\r')) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.cur() {
            if c == b'\n' {
                break;
            }
            self.bump();
        }
    }

    fn skip_all(&mut self) {
        loop {
            match self.cur() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                Some(b'#') => self.skip_comment(),
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        match self.cur() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.bump(),
            _ => return Err(self.err("expecting a setting name")),
        }
        while matches!(self.cur(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.') {
            self.bump();
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn string(&mut self) -> Result<String, String> {
        let q = self.cur().ok_or_else(|| self.err("expecting a string"))?;
        if q == b'"'
            && self.s.get(self.i + 1) == Some(&b'"')
            && self.s.get(self.i + 2) == Some(&b'"')
        {
            for _ in 0..3 {
                self.bump();
            }
            let start = self.i;
            loop {
                match self.cur() {
                    None => return Err(self.err("unterminated triple-quoted string")),
                    Some(b'"')
                        if self.s.get(self.i + 1) == Some(&b'"')
                            && self.s.get(self.i + 2) == Some(&b'"') =>
                    {
                        let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                        for _ in 0..3 {
                            self.bump();
                        }
                        return Ok(v);
                    }
                    Some(_) => self.bump(),
                }
            }
        }
        self.bump();
        let start = self.i;
        loop {
            match self.cur() {
                None | Some(b'\n') => return Err(self.err("unterminated string")),
                Some(c) if c == q => {
                    let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                    self.bump();
                    return Ok(v);
                }
                Some(_) => self.bump(),
            }
        }
    }

    fn number(&mut self) -> Result<i64, String> {
        let start = self.i;
        if matches!(self.cur(), Some(b'-' | b'+')) {
            self.bump();
        }
        while matches!(self.cur(), Some(c) if c.is_ascii_digit()) {
            self.bump();
        }
        let txt = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        txt.parse::<i64>()
            .map_err(|_| self.err(&format!("bad number {txt:?}")))
    }

    fn value(&mut self, depth: usize) -> Result<ConfValue, String> {
        match self.cur() {
            Some(b'"' | b'\'') => Ok(ConfValue::Str(self.string()?)),
            Some(b'[') if depth < 8 => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip_all();
                    if self.cur() == Some(b']') {
                        self.bump();
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip_all();
                    match self.cur() {
                        Some(b',') => self.bump(),
                        Some(b']') => {
                            self.bump();
                            break;
                        }
                        _ => return Err(self.err("expecting ',' or ']' in list")),
                    }
                }
                Ok(ConfValue::List(items))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                Ok(ConfValue::Int(self.number()?))
            }
            _ => Err(self.err("expecting a value (quoted string, number or list)")),
        }
    }
}

/// Parses libvirt's configuration syntax: `key = value`, strings quoted, lists in
/// `[ ]`, `#` comments, statements separated by newlines or `;`.
pub fn libvirt_conf(text: &str) -> Result<LibvirtConf, String> {
    let mut p = ConfParser {
        s: text.as_bytes(),
        i: 0,
        line: 1,
    };
    let mut entries = Vec::new();
    loop {
        p.skip_all();
        if p.cur().is_none() {
            break;
        }
        let name = p.name()?;
        p.skip_blanks();
        if p.cur() != Some(b'=') {
            return Err(p.err(&format!("expecting '=' after {name}")));
        }
        p.bump();
        p.skip_blanks();
        let v = p.value(0)?;
        p.skip_blanks();
        match p.cur() {
            None | Some(b'\n') => {}
            Some(b';') => p.bump(),
            Some(b'#') => p.skip_comment(),
            Some(_) => {
                return Err(p.err(&format!("expecting a separator after the value of {name}")))
            }
        }
        entries.push((name, v));
    }
    Ok(LibvirtConf { entries })
}

/// A parsed oslo.config INI file (`nova.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// section -> key -> values in order (options may repeat).
    pub sections: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Ini {
    /// The last value of `key` in `section` (oslo.config semantics for single options).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        let key = key.replace('-', "_");
        self.sections
            .get(section)?
            .get(&key)?
            .last()
            .map(String::as_str)
    }
}

/// Parses oslo.config INI syntax: `[section]`, `key = value` or `key: value`,
/// `#`/`;` comment lines, indented continuation lines, optional matching quotes.
pub fn ini(text: &str) -> Result<Ini, String> {
    let mut ini = Ini::default();
    let mut section: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            last_key = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (Some(sec), Some(k)) = (&section, &last_key) {
                if let Some(v) = ini
                    .sections
                    .get_mut(sec)
                    .and_then(|s| s.get_mut(k))
                    .and_then(|v| v.last_mut())
                {
                    v.push('\n');
                    v.push_str(trimmed);
                    continue;
                }
            }
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unterminated section header", n + 1))?;
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(format!("line {}: empty section name", n + 1));
            }
            ini.sections.entry(name.clone()).or_default();
            section = Some(name);
            last_key = None;
            continue;
        }
        let pos = trimmed
            .find(['=', ':'])
            .ok_or_else(|| format!("line {}: expecting 'key = value'", n + 1))?;
        let key = trimmed[..pos].trim().replace('-', "_");
        if key.is_empty() {
            return Err(format!("line {}: empty key", n + 1));
        }
        let mut value = trimmed[pos + 1..].trim().to_owned();
        for q in ['"', '\''] {
            if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
                value = value[1..value.len() - 1].to_owned();
                break;
            }
        }
        let sec = section
            .clone()
            .ok_or_else(|| format!("line {}: option before any [section]", n + 1))?;
        ini.sections
            .entry(sec)
            .or_default()
            .entry(key.clone())
            .or_default()
            .push(value);
        last_key = Some(key);
    }
    Ok(ini)
}

/// User and group names from a `/etc/passwd` and `/etc/group` (never NSS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// uid -> first user name with that uid.
    pub users: BTreeMap<u32, String>,
    /// user name -> uid.
    pub user_ids: BTreeMap<String, u32>,
    /// gid -> first group name with that gid.
    pub groups: BTreeMap<u32, String>,
    /// group name -> gid.
    pub group_ids: BTreeMap<String, u32>,
}

/// Parses `name:x:id:...` lines (passwd or group); malformed lines and NIS `+`
/// entries are skipped.
pub fn id_file(text: &str) -> (BTreeMap<u32, String>, BTreeMap<String, u32>) {
    let mut by_id = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with('+')
            || line.starts_with('-')
        {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0].is_empty() {
            continue;
        }
        if let Ok(id) = f[2].parse::<u32>() {
            by_id.entry(id).or_insert_with(|| f[0].to_owned());
            by_name.entry(f[0].to_owned()).or_insert(id);
        }
    }
    (by_id, by_name)
}

/// One socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local address in the kernel's hex notation.
    pub local_addr: String,
    /// Local port.
    pub port: u16,
    /// State (0x0A = LISTEN).
    pub state: u8,
}

/// TCP state LISTEN.
pub const TCP_LISTEN: u8 = 0x0A;

/// Parses `/proc/net/tcp{,6}`.
pub fn proc_net_tcp(text: &str) -> Result<Vec<TcpSocket>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || (n == 0 && t.starts_with("sl")) {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 4 {
            return Err(format!("line {}: too few fields", n + 1));
        }
        let (addr, port) = f[1]
            .rsplit_once(':')
            .ok_or_else(|| format!("line {}: bad local address {:?}", n + 1, f[1]))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: bad local address {:?}", n + 1, f[1]));
        }
        let port = u16::from_str_radix(port, 16)
            .map_err(|_| format!("line {}: bad port {port:?}", n + 1))?;
        let state = u8::from_str_radix(f[3], 16)
            .map_err(|_| format!("line {}: bad state {:?}", n + 1, f[3]))?;
        out.push(TcpSocket {
            local_addr: addr.to_owned(),
            port,
            state,
        });
    }
    Ok(out)
}

/// Parses `/sys/kernel/security/apparmor/profiles`: `NAME (MODE)` per line, split
/// on the last ` (`.
pub fn apparmor_profiles(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_end();
        if l.trim().is_empty() {
            continue;
        }
        let (name, mode) =
            split_label(l).ok_or_else(|| format!("line {}: no \"(mode)\" in {l:?}", n + 1))?;
        out.push((name.to_owned(), mode.to_owned()));
    }
    Ok(out)
}

/// Splits an AppArmor label `NAME (MODE)` on the last ` (`.
pub fn split_label(label: &str) -> Option<(&str, &str)> {
    let (name, rest) = label.rsplit_once(" (")?;
    let mode = rest.strip_suffix(')')?;
    if name.trim().is_empty() || mode.is_empty() || !mode.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    Some((name, mode))
}

/// The four numbers of the `Uid:` (or `Gid:`) line of `/proc/PID/status`.
pub fn status_ids(text: &str, key: &str) -> Result<[u32; 4], String> {
    let prefix = format!("{key}:");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .ok_or_else(|| format!("no {key}: line"))?;
    let nums: Vec<&str> = line[prefix.len()..].split_whitespace().collect();
    if nums.len() != 4 {
        return Err(format!(
            "{key}: line has {} fields, expected 4: {line:?}",
            nums.len()
        ));
    }
    let mut out = [0u32; 4];
    for (slot, s) in out.iter_mut().zip(&nums) {
        *slot = s
            .parse::<u32>()
            .map_err(|_| format!("{key}: bad number {s:?}"))?;
    }
    Ok(out)
}

/// Splits `/proc/PID/cmdline` (NUL-separated) into arguments.
pub fn cmdline_args(bytes: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

/// The data byte of a one-byte efivarfs variable (4 attribute bytes + data).
pub fn efivar_byte(bytes: &[u8]) -> Result<u8, String> {
    match bytes {
        [_, _, _, _, b, ..] => Ok(*b),
        _ => Err(format!(
            "efivar has {} bytes, expected at least 5",
            bytes.len()
        )),
    }
}

/// The union of the `flags` lines of `/proc/cpuinfo`.
pub fn cpuinfo_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim() == "flags" {
                out.extend(v.split_whitespace().map(str::to_owned));
            }
        }
    }
    out
}

/// Simple glob match: `*` matches any run of characters, `?` one character.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                 31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n";
        let m = mountinfo(t).expect("ok");
        assert_eq!(m[0].mount_point, "/mnt/with space");
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[1].fs_type, "tmpfs");
        assert!(mountinfo("1 2 3\n").is_err());
        assert!(mountinfo("x 2 0:1 / / rw - ext4 a b\n").is_err());
        assert_eq!(unescape_octal("a\\"), "a\\");
        assert_eq!(unescape_octal("\\04"), "\\04");
    }

    #[test]
    fn libvirt_conf_syntax() {
        let t = r#"
# comment
security_driver = "none"   # trailing
security_default_confined = 0
cgroup_controllers = [ "cpu", "devices",
   # inner comment
   "memory", ]
user = '+0'; group = "kvm"
doc = """multi
line"""
security_driver = "apparmor"
"#;
        let c = libvirt_conf(t).expect("ok");
        assert_eq!(
            c.get("security_driver"),
            Some(&ConfValue::Str("none".into()))
        );
        assert_eq!(
            c.get("security_default_confined")
                .and_then(ConfValue::as_int),
            Some(0)
        );
        assert_eq!(c.get("user").and_then(ConfValue::as_str), Some("+0"));
        assert_eq!(c.get("group").and_then(ConfValue::as_str), Some("kvm"));
        match c.get("cgroup_controllers") {
            Some(ConfValue::List(v)) => assert_eq!(v.len(), 3),
            other => panic!("unexpected {other:?}"),
        }
        assert!(libvirt_conf("security_driver = none\n").is_err());
        assert!(libvirt_conf("security_driver = \"none\n").is_err());
        assert!(libvirt_conf("x = [1, 2\n").is_err());
        assert!(libvirt_conf("x = 1 2\n").is_err());
        assert!(libvirt_conf("= 1\n").is_err());
        assert!(libvirt_conf("x = 99999999999999999999999\n").is_err());
        let deep = format!("x = {}1{}\n", "[".repeat(50), "]".repeat(50));
        assert!(libvirt_conf(&deep).is_err());
    }

    #[test]
    fn ini_syntax() {
        let t = "[DEFAULT]\nstate_path = /srv/nova\n# c\ninstances-path: \"$state_path/inst\"\n[glance]\napi_servers = a,\n  b\n";
        let i = ini(t).expect("ok");
        assert_eq!(i.get("DEFAULT", "state_path"), Some("/srv/nova"));
        assert_eq!(i.get("DEFAULT", "instances_path"), Some("$state_path/inst"));
        assert_eq!(i.get("glance", "api_servers"), Some("a,\nb"));
        assert!(ini("key = v\n").is_err());
        assert!(ini("[DEFAULT\n").is_err());
        assert!(ini("[DEFAULT]\njunk\n").is_err());
    }

    #[test]
    fn tcp_table() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:407D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n";
        let s = proc_net_tcp(t).expect("ok");
        assert_eq!(s[0].port, 16509);
        assert_eq!(s[0].state, TCP_LISTEN);
        assert!(proc_net_tcp("h\n 0: zz:1 0:0 0A\n").is_err());
        assert!(proc_net_tcp("h\n 0: 00:1\n").is_err());
    }

    #[test]
    fn profiles_and_labels() {
        let p =
            apparmor_profiles("libvirt-abc (enforce)\n:ns:name (complain)\n/usr/bin/a b (kill)\n")
                .expect("ok");
        assert_eq!(p[1], (":ns:name".to_owned(), "complain".to_owned()));
        assert_eq!(p[2].0, "/usr/bin/a b");
        assert!(apparmor_profiles("noparen\n").is_err());
        assert!(apparmor_profiles("x (enforce\n").is_err());
        assert_eq!(split_label("unconfined"), None);
    }

    #[test]
    fn small_formats() {
        assert_eq!(
            status_ids("Name:\tx\nUid:\t1\t2\t3\t4\n", "Uid"),
            Ok([1, 2, 3, 4])
        );
        assert!(status_ids("Uid:\t1\t2\n", "Uid").is_err());
        assert!(status_ids("Uid:\t1\t2\tx\t4\n", "Uid").is_err());
        assert!(status_ids("Name: x\n", "Uid").is_err());
        assert_eq!(
            cmdline_args(b"qemu\0-uuid\0u\0"),
            vec!["qemu", "-uuid", "u"]
        );
        assert_eq!(efivar_byte(&[6, 0, 0, 0, 1]), Ok(1));
        assert!(efivar_byte(&[6, 0]).is_err());
        assert!(cpuinfo_flags("flags\t: fpu vmx smx\nflags : sse\n").contains("smx"));
        let (ids, names) =
            id_file("root:x:0:0::/root:/bin/sh\n+nis\nbad\nnova:x:64060:64060::/:/bin/false\n");
        assert_eq!(ids.get(&64060).map(String::as_str), Some("nova"));
        assert_eq!(names.get("root"), Some(&0));
    }

    #[test]
    fn globbing() {
        assert!(glob_match("libvirt-*", "libvirt-1234"));
        assert!(glob_match("/usr/bin/man", "/usr/bin/man"));
        assert!(glob_match("a*b?d", "axxxbcd"));
        assert!(!glob_match("a*b", "ac"));
        assert!(glob_match("*", ""));
    }
}
