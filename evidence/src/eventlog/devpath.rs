//! UEFI device paths (UEFI spec §10) as text, the way firmware and
//! `efibootmgr -v` show them: `PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,…)/\EFI\BOOT\BOOTX64.EFI`.
//!
//! Common nodes get their text form; any other node (or a known one whose
//! body is malformed) is `Path(type,subtype,hex)`, the spec's generic form.
//! Only the node framing can fail: a node shorter than its 4-byte header or
//! running past the end.

use super::guid::Guid;
use crate::wire::{Reader, WireError, WireResultExt};
use std::fmt::Write as _;

const HARDWARE: u8 = 0x01;
const ACPI: u8 = 0x02;
const MESSAGING: u8 = 0x03;
const MEDIA: u8 = 0x04;
const END: u8 = 0x7f;

/// Renders a device path (a sequence of nodes up to an End node or the end
/// of the bytes). Instances are separated by `,`.
pub fn to_text(path: &[u8]) -> Result<String, WireError> {
    let mut r = Reader::new(path);
    let mut out = String::new();
    let mut need_slash = false;
    while r.remaining() > 0 {
        let at = r.position();
        let kind = r.u8().ctx("EFI_DEVICE_PATH_PROTOCOL.Type")?;
        let subtype = r.u8().ctx("EFI_DEVICE_PATH_PROTOCOL.SubType")?;
        let length = r.u16_le().ctx("EFI_DEVICE_PATH_PROTOCOL.Length")?;
        let Some(body_len) = usize::from(length).checked_sub(4) else {
            return Err(WireError::Invalid {
                field: "EFI_DEVICE_PATH_PROTOCOL.Length",
                offset: at,
                reason: format!("{length} is shorter than the node header"),
            });
        };
        let body = r.bytes(body_len).ctx("EFI_DEVICE_PATH_PROTOCOL data")?;
        match (kind, subtype) {
            (END, 0xff) => break,
            (END, _) => {
                out.push(',');
                need_slash = false;
            }
            _ => {
                if need_slash {
                    out.push('/');
                }
                out.push_str(&node_text(kind, subtype, body));
                need_slash = true;
            }
        }
    }
    Ok(out)
}

/// The text of one node (never fails: unknown or malformed → `Path(…)`).
pub fn node_text(kind: u8, subtype: u8, body: &[u8]) -> String {
    known_node(kind, subtype, body)
        .unwrap_or_else(|| format!("Path({kind},{subtype},{})", hex::encode(body)))
}

fn known_node(kind: u8, subtype: u8, body: &[u8]) -> Option<String> {
    let mut r = Reader::new(body);
    let text = match (kind, subtype) {
        (HARDWARE, 0x01) => {
            let function = r.u8().ok()?;
            let device = r.u8().ok()?;
            format!("Pci(0x{device:x},0x{function:x})")
        }
        (HARDWARE, 0x03) => {
            let t = r.u32_le().ok()?;
            let start = r.u64_le().ok()?;
            let end = r.u64_le().ok()?;
            format!("MemoryMapped(0x{t:x},0x{start:x},0x{end:x})")
        }
        (HARDWARE, 0x04) => vendor("VenHw", &mut r)?,
        (HARDWARE, 0x05) => format!("Ctrl(0x{:x})", r.u32_le().ok()?),
        (ACPI, 0x01) => {
            let hid = r.u32_le().ok()?;
            let uid = r.u32_le().ok()?;
            match hid {
                0x0a03_41d0 => format!("PciRoot(0x{uid:x})"),
                0x0a08_41d0 => format!("PcieRoot(0x{uid:x})"),
                _ => format!("Acpi({},0x{uid:x})", eisa_id(hid)),
            }
        }
        (MESSAGING, 0x02) => {
            let pun = r.u16_le().ok()?;
            let lun = r.u16_le().ok()?;
            format!("Scsi(0x{pun:x},0x{lun:x})")
        }
        (MESSAGING, 0x05) => {
            let port = r.u8().ok()?;
            let interface = r.u8().ok()?;
            format!("USB(0x{port:x},0x{interface:x})")
        }
        (MESSAGING, 0x0a) => vendor("VenMsg", &mut r)?,
        (MESSAGING, 0x0b) => {
            let mac = r.bytes(32).ok()?;
            let if_type = r.u8().ok()?;
            // Ethernet (and the unset 0) use 6 bytes of the 32.
            let len = if if_type <= 1 { 6 } else { 32 };
            format!(
                "MAC({},0x{if_type:x})",
                hex::encode(mac.get(..len).unwrap_or(mac))
            )
        }
        (MESSAGING, 0x0c) => {
            let _local = r.bytes(4).ok()?;
            let remote = r.bytes(4).ok()?;
            format!("IPv4({})", dotted(remote))
        }
        (MESSAGING, 0x12) => {
            let hba = r.u16_le().ok()?;
            let pm = r.u16_le().ok()?;
            let lun = r.u16_le().ok()?;
            format!("Sata(0x{hba:x},0x{pm:x},0x{lun:x})")
        }
        (MESSAGING, 0x17) => {
            let nsid = r.u32_le().ok()?;
            let eui = r.bytes(8).ok()?;
            let eui: Vec<String> = eui.iter().map(|b| format!("{b:02X}")).collect();
            format!("NVMe(0x{nsid:x},{})", eui.join("-"))
        }
        (MESSAGING, 0x18) => {
            let uri = r.rest();
            if !uri.iter().all(|b| (0x20..0x7f).contains(b)) {
                return None;
            }
            format!("Uri({})", String::from_utf8_lossy(uri))
        }
        (MEDIA, 0x01) => {
            let number = r.u32_le().ok()?;
            let start = r.u64_le().ok()?;
            let size = r.u64_le().ok()?;
            let signature = r.array::<16>().ok()?;
            let _mbr_type = r.u8().ok()?;
            let sig_type = r.u8().ok()?;
            let (kind, sig) = match sig_type {
                1 => {
                    let s = u32::from_le_bytes([
                        signature[0],
                        signature[1],
                        signature[2],
                        signature[3],
                    ]);
                    ("MBR".to_string(), format!("0x{s:08x}"))
                }
                2 => ("GPT".to_string(), Guid(signature).to_string()),
                t => (t.to_string(), "0".to_string()),
            };
            format!("HD({number},{kind},{sig},0x{start:x},0x{size:x})")
        }
        (MEDIA, 0x02) => {
            let entry = r.u32_le().ok()?;
            let start = r.u64_le().ok()?;
            let size = r.u64_le().ok()?;
            format!("CDROM(0x{entry:x},0x{start:x},0x{size:x})")
        }
        (MEDIA, 0x03) => vendor("VenMedia", &mut r)?,
        (MEDIA, 0x04) => utf16z(r.rest())?,
        (MEDIA, 0x06) => format!("FvFile({})", Guid(r.array::<16>().ok()?)),
        (MEDIA, 0x07) => format!("Fv({})", Guid(r.array::<16>().ok()?)),
        (MEDIA, 0x08) => {
            let _reserved = r.u32_le().ok()?;
            let start = r.u64_le().ok()?;
            let end = r.u64_le().ok()?;
            format!("Offset(0x{start:x},0x{end:x})")
        }
        _ => return None,
    };
    // A known node with bytes left over is shown in the generic form.
    (r.remaining() == 0).then_some(text)
}

fn vendor(name: &str, r: &mut Reader<'_>) -> Option<String> {
    let guid = Guid(r.array::<16>().ok()?);
    let data = r.rest();
    Some(if data.is_empty() {
        format!("{name}({guid})")
    } else {
        format!("{name}({guid},{})", hex::encode(data))
    })
}

fn dotted(ip: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in ip.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        let _ = write!(s, "{b}");
    }
    s
}

/// A compressed EISA id (`PNP0A03`).
fn eisa_id(hid: u32) -> String {
    let vendor = hid & 0xffff;
    let letter = |shift: u32| char::from(b'@' + ((vendor >> shift) & 0x1f) as u8);
    format!("{}{}{}{:04X}", letter(10), letter(5), letter(0), hid >> 16)
}

/// The little-endian `u16`s of `bytes` (an odd last byte is ignored).
pub(crate) fn le_u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| match c {
            [a, b] => u16::from_le_bytes([*a, *b]),
            _ => 0,
        })
        .collect()
}

/// A NUL-terminated (or not) UTF-16LE string; None when it is not valid
/// UTF-16 or has an odd length.
pub fn utf16z(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units = le_u16s(bytes);
    let end = units.iter().position(|u| *u == 0).unwrap_or(units.len());
    let (text, rest) = units.split_at(end);
    // Only NULs may follow the terminator.
    if rest.iter().any(|u| *u != 0) {
        return None;
    }
    String::from_utf16(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: u8, sub: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, sub];
        v.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect()
    }

    #[test]
    fn fedora_boot_entry() {
        // Boot0001 "Linux Boot Manager" of tpm2-tools' event-sd-boot-fedora37 fixture.
        let path = hex::decode("04012a0001000000000800000000000000001000000000003c64b93c086ce54f852d17e1ae7011580202040446005c004500460049005c00730079007300740065006d0064005c00730079007300740065006d0064002d0062006f006f0074007800360034002e0065006600690000007fff0400").unwrap();
        assert_eq!(
            to_text(&path).unwrap(),
            "HD(1,GPT,3cb9643c-6c08-4fe5-852d-17e1ae701158,0x800,0x100000)/\\EFI\\systemd\\systemd-bootx64.efi"
        );
        let misc = hex::decode("02010c00d041030a000000000101060003020101060000007fff0400").unwrap();
        assert_eq!(
            to_text(&misc).unwrap(),
            "PciRoot(0x0)/Pci(0x2,0x3)/Pci(0x0,0x0)"
        );
        let fv = hex::decode(
            "04071400c9bdb87cebf8344faaea3ee4af6516a10406140021aa2c4614760345836e8ab6f46623317fff0400",
        )
        .unwrap();
        assert_eq!(
            to_text(&fv).unwrap(),
            "Fv(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)"
        );
    }

    #[test]
    fn every_common_node() {
        let mut mac = [0u8; 33];
        mac[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        mac[32] = 1;
        let mut hd_mbr = vec![2, 0, 0, 0];
        hd_mbr.extend_from_slice(&63u64.to_le_bytes());
        hd_mbr.extend_from_slice(&1000u64.to_le_bytes());
        hd_mbr.extend_from_slice(&[0x78, 0x56, 0x34, 0x12]);
        hd_mbr.extend_from_slice(&[0; 12]);
        hd_mbr.extend_from_slice(&[1, 1]);
        let mut nvme = 1u32.to_le_bytes().to_vec();
        nvme.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut offset = vec![0; 4];
        offset.extend_from_slice(&0x10u64.to_le_bytes());
        offset.extend_from_slice(&0x20u64.to_le_bytes());
        let mut mm = 11u32.to_le_bytes().to_vec();
        mm.extend_from_slice(&0xff00u64.to_le_bytes());
        mm.extend_from_slice(&0xffffu64.to_le_bytes());
        let mut cd = 0u32.to_le_bytes().to_vec();
        cd.extend_from_slice(&1u64.to_le_bytes());
        cd.extend_from_slice(&2u64.to_le_bytes());
        let mut ven = Guid::EFI_GLOBAL_VARIABLE.0.to_vec();
        ven.push(0xab);
        let mut ip = vec![0; 4];
        ip.extend_from_slice(&[10, 0, 0, 1]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                node(2, 1, &[0xd0, 0x41, 0x08, 0x0a, 1, 0, 0, 0]),
                "PcieRoot(0x1)",
            ),
            (
                node(2, 1, &[0xd0, 0x41, 0x01, 0x05, 0, 0, 0, 0]),
                "Acpi(PNP0501,0x0)",
            ),
            (node(3, 11, &mac), "MAC(525400123456,0x1)"),
            (
                node(3, 24, b"http://boot.example/x.efi"),
                "Uri(http://boot.example/x.efi)",
            ),
            (node(3, 24, &[0xff]), "Path(3,24,ff)"),
            (
                node(3, 18, &[1, 0, 0xff, 0xff, 0, 0]),
                "Sata(0x1,0xffff,0x0)",
            ),
            (node(3, 23, &nvme), "NVMe(0x1,01-02-03-04-05-06-07-08)"),
            (node(3, 2, &[1, 0, 2, 0]), "Scsi(0x1,0x2)"),
            (node(3, 5, &[1, 0]), "USB(0x1,0x0)"),
            (node(3, 12, &ip), "IPv4(10.0.0.1)"),
            (
                node(1, 4, &Guid::EFI_GLOBAL_VARIABLE.0),
                "VenHw(8be4df61-93ca-11d2-aa0d-00e098032b8c)",
            ),
            (
                node(3, 10, &ven),
                "VenMsg(8be4df61-93ca-11d2-aa0d-00e098032b8c,ab)",
            ),
            (
                node(4, 3, &Guid::EFI_GLOBAL_VARIABLE.0),
                "VenMedia(8be4df61-93ca-11d2-aa0d-00e098032b8c)",
            ),
            (node(1, 3, &mm), "MemoryMapped(0xb,0xff00,0xffff)"),
            (node(1, 5, &[7, 0, 0, 0]), "Ctrl(0x7)"),
            (node(4, 1, &hd_mbr), "HD(2,MBR,0x12345678,0x3f,0x3e8)"),
            (node(4, 2, &cd), "CDROM(0x0,0x1,0x2)"),
            (node(4, 8, &offset), "Offset(0x10,0x20)"),
            (
                node(4, 4, &utf16("\\EFI\\BOOT\\BOOTX64.EFI")),
                "\\EFI\\BOOT\\BOOTX64.EFI",
            ),
            (node(5, 1, &[1, 2]), "Path(5,1,0102)"),
            // A known node with a short or long body falls back to the generic form.
            (node(1, 1, &[1]), "Path(1,1,01)"),
            (node(1, 1, &[1, 2, 3]), "Path(1,1,010203)"),
        ];
        for (bytes, want) in cases {
            assert_eq!(to_text(&bytes).unwrap(), want, "{}", hex::encode(&bytes));
        }
        // Instances, and the end of the whole path.
        let mut two = node(1, 1, &[0, 1]);
        two.extend(node(0x7f, 0x01, &[]));
        two.extend(node(1, 1, &[0, 2]));
        two.extend(node(0x7f, 0xff, &[]));
        two.extend(node(1, 1, &[0, 3]));
        assert_eq!(to_text(&two).unwrap(), "Pci(0x1,0x0),Pci(0x2,0x0)");
    }

    #[test]
    fn framing_errors() {
        assert!(to_text(&[1, 1, 3, 0]).is_err());
        assert!(to_text(&[1, 1, 8, 0, 0]).is_err());
        assert!(to_text(&[1, 1]).is_err());
        assert_eq!(to_text(&[]).unwrap(), "");
        assert_eq!(utf16z(&[0x41]), None);
        assert_eq!(utf16z(&[0x41, 0, 0, 0, 0x42, 0]), None);
        assert_eq!(utf16z(&[0x00, 0xd8]), None);
        assert_eq!(utf16z(&[0x41, 0, 0, 0, 0, 0]).as_deref(), Some("A"));
    }
}
