//! Writing event logs and the structures inside events: the matching
//! encoders of [`super::parse`] and [`super::events`], for tests, fixtures
//! (evidence/testdata/eventlog/synthetic), the fuzz seeds and simulated
//! hosts. Output is in the format firmware writes.

use super::alg::Alg;
use super::events::STARTUP_LOCALITY;
use super::guid::Guid;
use super::parse::SPEC_ID_EVENT03;
use super::types::EventType;
use super::SpecIdAlgorithm;

/// Builds a log record by record.
#[derive(Debug, Clone)]
pub struct LogBuilder {
    /// `None`: legacy SHA-1 records.
    algorithms: Option<Vec<SpecIdAlgorithm>>,
    out: Vec<u8>,
}

/// A stand-in digest for an algorithm this crate cannot hash.
fn filler(size: usize) -> Vec<u8> {
    vec![0xab; size]
}

impl LogBuilder {
    /// A crypto-agile log with these banks (Spec ID header: platform class
    /// 0, spec 2.0 errata 2, 64-bit UINTN, no vendor info).
    pub fn crypto_agile(banks: &[Alg]) -> LogBuilder {
        let algorithms: Vec<SpecIdAlgorithm> = banks
            .iter()
            .map(|a| SpecIdAlgorithm {
                alg_id: a.id(),
                digest_size: a.size() as u16,
            })
            .collect();
        LogBuilder::crypto_agile_with(&algorithms, &[])
    }

    /// A crypto-agile log with any header algorithms (unknown ones get
    /// filler digests) and vendor info.
    pub fn crypto_agile_with(algorithms: &[SpecIdAlgorithm], vendor_info: &[u8]) -> LogBuilder {
        let header = spec_id_event(algorithms, 2, vendor_info);
        let mut b = LogBuilder {
            algorithms: None,
            out: Vec::new(),
        };
        b.legacy_record(0, EventType::EV_NO_ACTION, &[0; 20], &header);
        b.algorithms = Some(algorithms.to_vec());
        b
    }

    /// A legacy SHA-1 log (no header).
    pub fn legacy() -> LogBuilder {
        LogBuilder {
            algorithms: None,
            out: Vec::new(),
        }
    }

    fn legacy_record(&mut self, pcr: u32, t: EventType, digest: &[u8], data: &[u8]) {
        self.out.extend_from_slice(&pcr.to_le_bytes());
        self.out.extend_from_slice(&t.0.to_le_bytes());
        self.out.extend_from_slice(digest);
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
    }

    /// An event whose digests are the hashes of its data.
    pub fn event(&mut self, pcr: u32, t: EventType, data: &[u8]) -> &mut LogBuilder {
        self.event_hashing(pcr, t, data, data)
    }

    /// An event whose digests are the hashes of `measured` (an image, a
    /// firmware volume…), with `data` as its event data.
    pub fn event_hashing(
        &mut self,
        pcr: u32,
        t: EventType,
        measured: &[u8],
        data: &[u8],
    ) -> &mut LogBuilder {
        let digests: Vec<(u16, Vec<u8>)> = self
            .banks()
            .into_iter()
            .map(|a| {
                let d = match Alg::from_id(a.alg_id) {
                    Some(alg) => alg.digest(measured),
                    None => filler(usize::from(a.digest_size)),
                };
                (a.alg_id, d)
            })
            .collect();
        self.event_digests(pcr, t, &digests, data)
    }

    /// An event with the given digests (in a legacy log, the first one is
    /// written and must have 20 bytes).
    pub fn event_digests(
        &mut self,
        pcr: u32,
        t: EventType,
        digests: &[(u16, Vec<u8>)],
        data: &[u8],
    ) -> &mut LogBuilder {
        if self.algorithms.is_none() {
            let d = digests.first().map(|(_, d)| d.clone()).unwrap_or_default();
            self.legacy_record(pcr, t, &d, data);
            return self;
        }
        self.out.extend_from_slice(&pcr.to_le_bytes());
        self.out.extend_from_slice(&t.0.to_le_bytes());
        self.out
            .extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (id, d) in digests {
            self.out.extend_from_slice(&id.to_le_bytes());
            self.out.extend_from_slice(d);
        }
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
        self
    }

    /// An EV_NO_ACTION event (all digests zero) with this data.
    pub fn no_action(&mut self, pcr: u32, data: &[u8]) -> &mut LogBuilder {
        let digests: Vec<(u16, Vec<u8>)> = self
            .banks()
            .into_iter()
            .map(|a| (a.alg_id, vec![0; usize::from(a.digest_size)]))
            .collect();
        self.event_digests(pcr, EventType::EV_NO_ACTION, &digests, data)
    }

    /// The EV_NO_ACTION StartupLocality event (PCR 0).
    pub fn startup_locality(&mut self, locality: u8) -> &mut LogBuilder {
        self.no_action(0, &startup_locality_event(locality))
    }

    /// The header's algorithms (a legacy log: SHA-1).
    fn banks(&self) -> Vec<SpecIdAlgorithm> {
        self.algorithms.clone().unwrap_or_else(|| {
            vec![SpecIdAlgorithm {
                alg_id: Alg::Sha1.id(),
                digest_size: 20,
            }]
        })
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// The log.
    pub fn finish(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// A `TCG_EfiSpecIDEvent` (Spec ID Event03) with this `specErrata`.
pub fn spec_id_event(algorithms: &[SpecIdAlgorithm], errata: u8, vendor_info: &[u8]) -> Vec<u8> {
    let mut v = SPEC_ID_EVENT03.to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[0, 2, errata, 2]);
    v.extend_from_slice(&(algorithms.len() as u32).to_le_bytes());
    for a in algorithms {
        v.extend_from_slice(&a.alg_id.to_le_bytes());
        v.extend_from_slice(&a.digest_size.to_le_bytes());
    }
    v.push(vendor_info.len() as u8);
    v.extend_from_slice(vendor_info);
    v
}

/// The data of a StartupLocality event.
pub fn startup_locality_event(locality: u8) -> Vec<u8> {
    let mut v = STARTUP_LOCALITY.to_vec();
    v.push(locality);
    v
}

/// UTF-16LE without a terminator.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// UTF-16LE with its NUL terminator.
pub fn utf16z(s: &str) -> Vec<u8> {
    let mut v = utf16(s);
    v.extend_from_slice(&[0, 0]);
    v
}

/// A `UEFI_VARIABLE_DATA`.
pub fn variable_data(guid: Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = guid.0.to_vec();
    v.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    v.extend_from_slice(&utf16(name));
    v.extend_from_slice(data);
    v
}

/// An `EFI_LOAD_OPTION`.
pub fn load_option(
    attributes: u32,
    description: &str,
    file_path: &[u8],
    optional: &[u8],
) -> Vec<u8> {
    let mut v = attributes.to_le_bytes().to_vec();
    v.extend_from_slice(&(file_path.len() as u16).to_le_bytes());
    v.extend_from_slice(&utf16z(description));
    v.extend_from_slice(file_path);
    v.extend_from_slice(optional);
    v
}

/// An `EFI_SIGNATURE_LIST` of equally sized signatures (owner, data).
pub fn signature_list(signature_type: Guid, signatures: &[(Guid, &[u8])]) -> Vec<u8> {
    let size = signatures.first().map_or(16, |(_, d)| 16 + d.len());
    let mut v = signature_type.0.to_vec();
    v.extend_from_slice(&((28 + size * signatures.len()) as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(size as u32).to_le_bytes());
    for (owner, data) in signatures {
        v.extend_from_slice(&owner.0);
        v.extend_from_slice(data);
    }
    v
}

/// A `UEFI_IMAGE_LOAD_EVENT`.
pub fn image_load(
    location: u64,
    length: u64,
    link_time_address: u64,
    device_path: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [
        location,
        length,
        link_time_address,
        device_path.len() as u64,
    ] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(device_path);
    v
}

/// A `UEFI_PLATFORM_FIRMWARE_BLOB`.
pub fn firmware_blob(base: u64, length: u64) -> Vec<u8> {
    let mut v = base.to_le_bytes().to_vec();
    v.extend_from_slice(&length.to_le_bytes());
    v
}

/// A `UEFI_PLATFORM_FIRMWARE_BLOB2`.
pub fn firmware_blob2(description: &str, base: u64, length: u64) -> Vec<u8> {
    let mut v = vec![description.len() as u8];
    v.extend_from_slice(description.as_bytes());
    v.extend_from_slice(&firmware_blob(base, length));
    v
}

/// A `UEFI_HANDOFF_TABLE_POINTERS` (64-bit), or `..._POINTERS2` with a
/// description.
pub fn handoff_tables(description: Option<&str>, tables: &[(Guid, u64)]) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(d) = description {
        v.push(d.len() as u8);
        v.extend_from_slice(d.as_bytes());
    }
    v.extend_from_slice(&(tables.len() as u64).to_le_bytes());
    for (g, a) in tables {
        v.extend_from_slice(&g.0);
        v.extend_from_slice(&a.to_le_bytes());
    }
    v
}

/// A `TCG_PCClientTaggedEvent`.
pub fn tagged_event(id: u32, data: &[u8]) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// One GPT partition for [`gpt_data`].
#[derive(Debug, Clone)]
pub struct GptPartition<'a> {
    /// `PartitionTypeGUID`.
    pub type_guid: Guid,
    /// `UniquePartitionGUID`.
    pub unique_guid: Guid,
    /// `StartingLBA`.
    pub start_lba: u64,
    /// `EndingLBA`.
    pub end_lba: u64,
    /// `PartitionName` (at most 36 UTF-16 units).
    pub name: &'a str,
}

/// A `UEFI_GPT_DATA` (header + 128-byte partition entries, 64-bit UINTN).
pub fn gpt_data(disk_guid: Guid, partitions: &[GptPartition<'_>]) -> Vec<u8> {
    let mut v = b"EFI PART".to_vec();
    v.extend_from_slice(&0x0001_0000u32.to_le_bytes());
    v.extend_from_slice(&92u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // CRC (not checked)
    v.extend_from_slice(&0u32.to_le_bytes());
    for lba in [1u64, 0x3f_ffff, 34, 0x3f_ffde] {
        v.extend_from_slice(&lba.to_le_bytes());
    }
    v.extend_from_slice(&disk_guid.0);
    v.extend_from_slice(&2u64.to_le_bytes());
    v.extend_from_slice(&128u32.to_le_bytes());
    v.extend_from_slice(&128u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(partitions.len() as u64).to_le_bytes());
    for p in partitions {
        v.extend_from_slice(&p.type_guid.0);
        v.extend_from_slice(&p.unique_guid.0);
        v.extend_from_slice(&p.start_lba.to_le_bytes());
        v.extend_from_slice(&p.end_lba.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        let mut name = utf16(p.name);
        name.resize(72, 0);
        v.extend_from_slice(&name);
    }
    v
}

/// A device path node (`Type`, `SubType`, body; the length is added).
pub fn devpath_node(kind: u8, subtype: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, subtype];
    v.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// The End of a whole device path.
pub fn devpath_end() -> Vec<u8> {
    devpath_node(0x7f, 0xff, &[])
}

/// `PciRoot(uid)`.
pub fn devpath_pci_root(uid: u32) -> Vec<u8> {
    let mut body = 0x0a03_41d0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&uid.to_le_bytes());
    devpath_node(0x02, 0x01, &body)
}

/// `Pci(device,function)`.
pub fn devpath_pci(device: u8, function: u8) -> Vec<u8> {
    devpath_node(0x01, 0x01, &[function, device])
}

/// `HD(number,GPT,signature,start,size)`.
pub fn devpath_hd_gpt(number: u32, start: u64, size: u64, signature: Guid) -> Vec<u8> {
    let mut body = number.to_le_bytes().to_vec();
    body.extend_from_slice(&start.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    body.extend_from_slice(&signature.0);
    body.extend_from_slice(&[0x02, 0x02]);
    devpath_node(0x04, 0x01, &body)
}

/// A file path node.
pub fn devpath_file(path: &str) -> Vec<u8> {
    devpath_node(0x04, 0x04, &utf16z(path))
}

/// `Fv(guid)`.
pub fn devpath_fv(guid: Guid) -> Vec<u8> {
    devpath_node(0x04, 0x07, &guid.0)
}

/// `FvFile(guid)`.
pub fn devpath_fv_file(guid: Guid) -> Vec<u8> {
    devpath_node(0x04, 0x06, &guid.0)
}
