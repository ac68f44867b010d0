//! What an event's data says: the PC Client PFP and UEFI structures of each
//! event type, decoded for display and for policy.
//!
//! Decoding never fails the log: data that does not decode as its type
//! says is kept as [`EventData::Raw`] with the reason, and so is the data
//! of an unknown type. Decoded data is a *claim*: it means something only
//! when its PCR replayed to the quote and [`super::proof`] says the digest
//! is the hash of this data (module docs of [`super`]).

use super::devpath::{self, le_u16s, utf16z};
use super::guid::Guid;
use super::parse::{parse_spec_id, SPEC_ID_EVENT03};
use super::types::EventType;
use super::{ser_hex, Event, EventLog, SpecId};
use crate::wire::{Reader, WireError, WireResultExt};
use serde::Serialize;

/// `StartupLocality\0`: the signature of the EV_NO_ACTION event giving the
/// locality of TPM2_Startup (PC Client PFP §10.4.5.3).
pub const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// Most partitions or tables decoded from one event (more is kept raw).
const MAX_ENTRIES: u64 = 1024;

/// The decoded data of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    /// EV_NO_ACTION: the Spec ID Event03 header.
    SpecId(SpecId),
    /// EV_NO_ACTION `StartupLocality`: the locality of TPM2_Startup (3: an
    /// H-CRTM-less start at locality 3; 4: an H-CRTM sequence).
    StartupLocality {
        /// The locality.
        locality: u8,
    },
    /// Another EV_NO_ACTION event (`SP800-155 Event`, `NvIndexInstance`…):
    /// its 16-byte signature and the rest.
    NoAction {
        /// The signature, up to its first NUL.
        signature: String,
        /// The bytes after it.
        #[serde(serialize_with = "ser_hex")]
        rest: Vec<u8>,
    },
    /// EV_SEPARATOR: 0 normally, another value after an error.
    Separator {
        /// The 4-byte value.
        value: u32,
    },
    /// A string: EV_ACTION, EV_EFI_ACTION, EV_IPL, EV_S_CRTM_VERSION,
    /// EV_OMIT_BOOT_DEVICE_EVENTS, EV_EFI_HCRTM_EVENT, EV_POST_CODE… (ASCII
    /// or UTF-16, trailing NULs removed).
    Text {
        /// The text.
        text: String,
    },
    /// EV_EFI_VARIABLE_*: a `UEFI_VARIABLE_DATA`.
    Variable(Variable),
    /// EV_EFI_BOOT_SERVICES_APPLICATION / _DRIVER,
    /// EV_EFI_RUNTIME_SERVICES_DRIVER: a `UEFI_IMAGE_LOAD_EVENT`.
    Image(ImageLoad),
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB (and a blob-shaped EV_POST_CODE or
    /// EV_S_CRTM_CONTENTS): `UEFI_PLATFORM_FIRMWARE_BLOB`.
    FirmwareBlob {
        /// Physical base address.
        base: u64,
        /// Length in bytes.
        length: u64,
    },
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_POST_CODE2:
    /// `UEFI_PLATFORM_FIRMWARE_BLOB2`.
    FirmwareBlob2 {
        /// The description.
        description: String,
        /// Physical base address.
        base: u64,
        /// Length in bytes.
        length: u64,
    },
    /// EV_EFI_HANDOFF_TABLES(2): `UEFI_HANDOFF_TABLE_POINTERS(2)`.
    HandoffTables {
        /// The description (tables2 only).
        description: Option<String>,
        /// The tables.
        tables: Vec<HandoffTable>,
    },
    /// EV_EFI_GPT_EVENT(2): `UEFI_GPT_DATA`.
    Gpt(Gpt),
    /// EV_EVENT_TAG: `TCG_PCClientTaggedEvent`.
    Tagged {
        /// `taggedEventID`.
        id: u32,
        /// `taggedEventData`.
        #[serde(serialize_with = "ser_hex")]
        data: Vec<u8>,
    },
    /// EV_EFI_SPDM_FIRMWARE_BLOB / _CONFIG: the header of a
    /// `TCG_DEVICE_SECURITY_EVENT_DATA`.
    SpdmDevice {
        /// `Signature` (`SPDM Device Sec`, `SPDM Device Sec2`).
        signature: String,
        /// `Version`.
        version: u16,
        /// The rest of the structure.
        #[serde(serialize_with = "ser_hex")]
        rest: Vec<u8>,
    },
    /// EV_COMPACT_HASH and other opaque data that decoded as what it is:
    /// bytes.
    Bytes {
        /// The data.
        #[serde(serialize_with = "ser_hex")]
        data: Vec<u8>,
    },
    /// An unknown type, or data that did not decode as its type says.
    Raw {
        /// Why it is raw (None: the type has no structure this crate knows).
        error: Option<String>,
        /// The data.
        #[serde(serialize_with = "ser_hex")]
        data: Vec<u8>,
    },
}

/// A `UEFI_VARIABLE_DATA`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    /// `VariableName` (the vendor GUID).
    pub guid: Guid,
    /// `UnicodeName`.
    pub name: String,
    /// `VariableData`.
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
    /// What `VariableData` contains, when known.
    pub value: VariableValue,
}

/// The contents of a well-known variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VariableValue {
    /// A one-byte variable (SecureBoot, SetupMode, AuditMode, DeployedMode).
    Byte {
        /// The byte.
        value: u8,
    },
    /// Empty data.
    Empty,
    /// BootOrder: the Boot#### numbers.
    BootOrder {
        /// The numbers.
        order: Vec<u16>,
    },
    /// Boot####: an `EFI_LOAD_OPTION`.
    LoadOption(LoadOption),
    /// PK, KEK, db, dbx…: `EFI_SIGNATURE_LIST`s.
    SignatureLists {
        /// The lists.
        lists: Vec<SignatureList>,
    },
    /// EV_EFI_VARIABLE_AUTHORITY: one `EFI_SIGNATURE_DATA`, the certificate
    /// (or hash) that verified an image.
    Signature(Signature),
    /// A variable this crate does not interpret.
    Other,
    /// A well-known variable whose data did not decode.
    Undecoded {
        /// Why.
        error: String,
    },
}

/// An `EFI_LOAD_OPTION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadOption {
    /// `Attributes` (bit 0: active).
    pub attributes: u32,
    /// `Description`.
    pub description: String,
    /// `FilePathList` as text (None when it does not parse).
    pub device_path: Option<String>,
    /// `FilePathList`.
    #[serde(serialize_with = "ser_hex")]
    pub file_path_list: Vec<u8>,
    /// `OptionalData`.
    #[serde(serialize_with = "ser_hex")]
    pub optional_data: Vec<u8>,
}

/// One `EFI_SIGNATURE_LIST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureList {
    /// `SignatureType` (EFI_CERT_X509, EFI_CERT_SHA256…).
    pub signature_type: Guid,
    /// The `EFI_SIGNATURE_DATA` entries.
    pub signatures: Vec<Signature>,
}

/// One `EFI_SIGNATURE_DATA`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// `SignatureOwner`.
    pub owner: Guid,
    /// `SignatureData` (a DER certificate, a hash…).
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
}

/// A `UEFI_IMAGE_LOAD_EVENT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageLoad {
    /// `ImageLocationInMemory`.
    pub location: u64,
    /// `ImageLengthInMemory`.
    pub length: u64,
    /// `ImageLinkTimeAddress`.
    pub link_time_address: u64,
    /// `DevicePath` as text (None when it does not parse).
    pub device_path: Option<String>,
    /// `DevicePath`.
    #[serde(serialize_with = "ser_hex")]
    pub device_path_bytes: Vec<u8>,
}

/// One entry of `UEFI_HANDOFF_TABLE_POINTERS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandoffTable {
    /// `VendorGuid`.
    pub guid: Guid,
    /// `VendorTable` (address).
    pub address: u64,
}

/// A `UEFI_GPT_DATA`: the partition table header and the partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpt {
    /// `DiskGUID`.
    pub disk_guid: Guid,
    /// `Revision`.
    pub revision: u32,
    /// `MyLBA`.
    pub my_lba: u64,
    /// `AlternateLBA`.
    pub alternate_lba: u64,
    /// `FirstUsableLBA`.
    pub first_usable_lba: u64,
    /// `LastUsableLBA`.
    pub last_usable_lba: u64,
    /// `NumberOfPartitionEntries` of the header.
    pub partition_entries: u32,
    /// `SizeOfPartitionEntry`.
    pub partition_entry_size: u32,
    /// The partitions of the event (`NumberOfPartitions` entries).
    pub partitions: Vec<Partition>,
}

/// One GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// `PartitionTypeGUID`.
    pub type_guid: Guid,
    /// `UniquePartitionGUID`.
    pub unique_guid: Guid,
    /// `StartingLBA`.
    pub start_lba: u64,
    /// `EndingLBA`.
    pub end_lba: u64,
    /// `Attributes`.
    pub attributes: u64,
    /// `PartitionName`.
    pub name: String,
}

/// Decodes events; knows the log's `UINTN` size (from the Spec ID header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// Bytes of a UEFI `UINTN` (8 on 64-bit firmware, 4 on 32-bit).
    pub uintn: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { uintn: 8 }
    }
}

impl Decoder {
    /// The decoder of a log: `uintnSize` 1 means 32-bit, anything else (and
    /// a legacy log) 64-bit.
    pub fn for_log(log: &EventLog) -> Decoder {
        match &log.spec_id {
            Some(s) if s.uintn_size == 1 => Decoder { uintn: 4 },
            _ => Decoder { uintn: 8 },
        }
    }

    /// Decodes an event's data by its type; never fails (see
    /// [`EventData::Raw`]).
    pub fn decode(&self, event: &Event) -> EventData {
        let data = event.data.as_slice();
        let t = event.event_type;
        let result = match t {
            EventType::EV_NO_ACTION => Ok(no_action(data)),
            EventType::EV_SEPARATOR => separator(data),
            EventType::EV_ACTION
            | EventType::EV_EFI_ACTION
            | EventType::EV_OMIT_BOOT_DEVICE_EVENTS
            | EventType::EV_EFI_HCRTM_EVENT => {
                ascii(data).ok_or_else(|| "not an ASCII string".to_string())
            }
            EventType::EV_IPL
            | EventType::EV_S_CRTM_VERSION
            | EventType::EV_PLATFORM_CONFIG_FLAGS
            | EventType::EV_TABLE_OF_DEVICES
            | EventType::EV_NONHOST_CONFIG
            | EventType::EV_NONHOST_INFO
            | EventType::EV_NONHOST_CODE
            | EventType::EV_IPL_PARTITION_DATA => text_or_bytes(data),
            EventType::EV_POST_CODE | EventType::EV_S_CRTM_CONTENTS => post_code(data),
            EventType::EV_POST_CODE2 | EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2 => {
                blob2(data).map_err(|e| e.to_string())
            }
            EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB => blob(data).map_err(|e| e.to_string()),
            EventType::EV_EVENT_TAG => tagged(data).map_err(|e| e.to_string()),
            EventType::EV_COMPACT_HASH => Ok(EventData::Bytes {
                data: data.to_vec(),
            }),
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
            | EventType::EV_EFI_VARIABLE_BOOT
            | EventType::EV_EFI_VARIABLE_BOOT2
            | EventType::EV_EFI_VARIABLE_AUTHORITY
            | EventType::EV_EFI_SPDM_DEVICE_POLICY
            | EventType::EV_EFI_SPDM_DEVICE_AUTHORITY => variable(data, t)
                .map(EventData::Variable)
                .map_err(|e| e.to_string()),
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION
            | EventType::EV_EFI_BOOT_SERVICES_DRIVER
            | EventType::EV_EFI_RUNTIME_SERVICES_DRIVER => {
                image(data).map(EventData::Image).map_err(|e| e.to_string())
            }
            EventType::EV_EFI_GPT_EVENT | EventType::EV_EFI_GPT_EVENT2 => self
                .gpt(data)
                .map(EventData::Gpt)
                .map_err(|e| e.to_string()),
            EventType::EV_EFI_HANDOFF_TABLES => {
                self.handoff(data, false).map_err(|e| e.to_string())
            }
            EventType::EV_EFI_HANDOFF_TABLES2 => {
                self.handoff(data, true).map_err(|e| e.to_string())
            }
            EventType::EV_EFI_SPDM_FIRMWARE_BLOB | EventType::EV_EFI_SPDM_FIRMWARE_CONFIG => {
                spdm(data).map_err(|e| e.to_string())
            }
            _ => {
                return EventData::Raw {
                    error: None,
                    data: data.to_vec(),
                }
            }
        };
        result.unwrap_or_else(|error| EventData::Raw {
            error: Some(error),
            data: data.to_vec(),
        })
    }

    fn uintn(&self, r: &mut Reader<'_>, field: &'static str) -> Result<u64, WireError> {
        if self.uintn == 4 {
            r.u32_le().map(u64::from).ctx(field)
        } else {
            r.u64_le().ctx(field)
        }
    }

    fn gpt(&self, data: &[u8]) -> Result<Gpt, WireError> {
        let mut r = Reader::new(data);
        let signature = r.bytes(8).ctx("UEFI_PARTITION_TABLE_HEADER.Signature")?;
        if signature != b"EFI PART" {
            return Err(r.invalid("UEFI_PARTITION_TABLE_HEADER.Signature", "not \"EFI PART\""));
        }
        let revision = r.u32_le().ctx("UEFI_PARTITION_TABLE_HEADER.Revision")?;
        let _header_size = r.u32_le().ctx("UEFI_PARTITION_TABLE_HEADER.HeaderSize")?;
        let _crc = r.u32_le().ctx("UEFI_PARTITION_TABLE_HEADER.HeaderCRC32")?;
        let _reserved = r.u32_le().ctx("UEFI_PARTITION_TABLE_HEADER.Reserved")?;
        let my_lba = r.u64_le().ctx("UEFI_PARTITION_TABLE_HEADER.MyLBA")?;
        let alternate_lba = r.u64_le().ctx("UEFI_PARTITION_TABLE_HEADER.AlternateLBA")?;
        let first_usable_lba = r
            .u64_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.FirstUsableLBA")?;
        let last_usable_lba = r
            .u64_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.LastUsableLBA")?;
        let disk_guid = Guid(
            r.array::<16>()
                .ctx("UEFI_PARTITION_TABLE_HEADER.DiskGUID")?,
        );
        let _entry_lba = r
            .u64_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.PartitionEntryLBA")?;
        let partition_entries = r
            .u32_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.NumberOfPartitionEntries")?;
        let entry_at = r.position();
        let partition_entry_size = r
            .u32_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.SizeOfPartitionEntry")?;
        let _entries_crc = r
            .u32_le()
            .ctx("UEFI_PARTITION_TABLE_HEADER.PartitionEntryArrayCRC32")?;
        let count_at = r.position();
        let count = self.uintn(&mut r, "UEFI_GPT_DATA.NumberOfPartitions")?;
        let entry_size = partition_entry_size as usize;
        if entry_size < 128 {
            return Err(WireError::Invalid {
                field: "UEFI_PARTITION_TABLE_HEADER.SizeOfPartitionEntry",
                offset: entry_at,
                reason: format!("{entry_size} bytes, less than 128"),
            });
        }
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(entry_size))
            .is_some_and(|total| total == r.remaining());
        if count > MAX_ENTRIES || !fits {
            return Err(WireError::Invalid {
                field: "UEFI_GPT_DATA.NumberOfPartitions",
                offset: count_at,
                reason: format!(
                    "{count} partitions of {entry_size} bytes in {} bytes",
                    r.remaining()
                ),
            });
        }
        let mut partitions = Vec::new();
        for _ in 0..count {
            let entry = r.bytes(entry_size).ctx("UEFI_GPT_DATA.Partitions")?;
            let mut e = Reader::new(entry);
            let type_guid = Guid(e.array::<16>().ctx("PartitionTypeGUID")?);
            let unique_guid = Guid(e.array::<16>().ctx("UniquePartitionGUID")?);
            let start_lba = e.u64_le().ctx("StartingLBA")?;
            let end_lba = e.u64_le().ctx("EndingLBA")?;
            let attributes = e.u64_le().ctx("Attributes")?;
            let name = e.bytes(72).ctx("PartitionName")?;
            partitions.push(Partition {
                type_guid,
                unique_guid,
                start_lba,
                end_lba,
                attributes,
                name: utf16z(name).unwrap_or_else(|| lossy_utf16(name)),
            });
        }
        Ok(Gpt {
            disk_guid,
            revision,
            my_lba,
            alternate_lba,
            first_usable_lba,
            last_usable_lba,
            partition_entries,
            partition_entry_size,
            partitions,
        })
    }

    fn handoff(&self, data: &[u8], with_description: bool) -> Result<EventData, WireError> {
        let mut r = Reader::new(data);
        let description = if with_description {
            let size = r
                .u8()
                .ctx("UEFI_HANDOFF_TABLE_POINTERS2.TableDescriptionSize")?;
            let d = r
                .bytes(usize::from(size))
                .ctx("UEFI_HANDOFF_TABLE_POINTERS2.TableDescription")?;
            Some(ascii_lossy(d))
        } else {
            None
        };
        let count_at = r.position();
        let count = self.uintn(&mut r, "UEFI_HANDOFF_TABLE_POINTERS.NumberOfTables")?;
        let entry = 16 + self.uintn;
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(entry))
            .is_some_and(|total| total == r.remaining());
        if count > MAX_ENTRIES || !fits {
            return Err(WireError::Invalid {
                field: "UEFI_HANDOFF_TABLE_POINTERS.NumberOfTables",
                offset: count_at,
                reason: format!("{count} tables in {} bytes", r.remaining()),
            });
        }
        let mut tables = Vec::new();
        for _ in 0..count {
            let guid = Guid(r.array::<16>().ctx("EFI_CONFIGURATION_TABLE.VendorGuid")?);
            let address = self.uintn(&mut r, "EFI_CONFIGURATION_TABLE.VendorTable")?;
            tables.push(HandoffTable { guid, address });
        }
        r.finish_as("UEFI_HANDOFF_TABLE_POINTERS")?;
        Ok(EventData::HandoffTables {
            description,
            tables,
        })
    }
}

/// Decodes an event with a 64-bit `UINTN` ([`Decoder::for_log`] knows the
/// log's).
pub fn decode(event: &Event) -> EventData {
    Decoder::default().decode(event)
}

fn no_action(data: &[u8]) -> EventData {
    if data.starts_with(SPEC_ID_EVENT03) {
        if let Ok(spec) = parse_spec_id(data, 0) {
            return EventData::SpecId(spec);
        }
    }
    if data.len() == 17 && data.starts_with(STARTUP_LOCALITY) {
        if let Some(&locality) = data.get(16) {
            return EventData::StartupLocality { locality };
        }
    }
    match data.get(..16) {
        Some(sig) if sig.iter().all(|b| *b == 0 || (0x20..0x7f).contains(b)) => {
            EventData::NoAction {
                signature: ascii_lossy(sig),
                rest: data.get(16..).unwrap_or(&[]).to_vec(),
            }
        }
        _ => EventData::Raw {
            error: None,
            data: data.to_vec(),
        },
    }
}

fn separator(data: &[u8]) -> Result<EventData, String> {
    let value: [u8; 4] = data
        .try_into()
        .map_err(|_| format!("{} bytes, not 4", data.len()))?;
    Ok(EventData::Separator {
        value: u32::from_le_bytes(value),
    })
}

fn is_text_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\n' || b == b'\r'
}

/// ASCII text (printable, then only NULs).
fn ascii(data: &[u8]) -> Option<EventData> {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (text, rest) = data.split_at(end);
    if text.is_empty() || !text.iter().all(|b| is_text_byte(*b)) || rest.iter().any(|b| *b != 0) {
        return None;
    }
    Some(EventData::Text {
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

/// UTF-16 text of printable ASCII characters (what firmware writes; other
/// bytes that happen to be valid UTF-16 are not taken for text).
fn utf16_text(data: &[u8]) -> Option<EventData> {
    let text = utf16z(data)?;
    if text.is_empty() || !text.bytes().all(is_text_byte) {
        return None;
    }
    Some(EventData::Text { text })
}

fn text_or_bytes(data: &[u8]) -> Result<EventData, String> {
    // Empty, or an empty string with its terminator (OVMF's S-CRTM version).
    if data.iter().all(|b| *b == 0) && data.len() <= 2 {
        return Ok(EventData::Text {
            text: String::new(),
        });
    }
    Ok(ascii(data)
        .or_else(|| utf16_text(data))
        .unwrap_or_else(|| EventData::Bytes {
            data: data.to_vec(),
        }))
}

fn post_code(data: &[u8]) -> Result<EventData, String> {
    if let Some(text) = ascii(data) {
        return Ok(text);
    }
    if data.len() == 16 {
        return blob(data).map_err(|e| e.to_string());
    }
    blob2(data).map_err(|_| "neither a string nor a firmware blob".to_string())
}

fn blob(data: &[u8]) -> Result<EventData, WireError> {
    let mut r = Reader::new(data);
    let base = r.u64_le().ctx("UEFI_PLATFORM_FIRMWARE_BLOB.BlobBase")?;
    let length = r.u64_le().ctx("UEFI_PLATFORM_FIRMWARE_BLOB.BlobLength")?;
    r.finish_as("UEFI_PLATFORM_FIRMWARE_BLOB")?;
    Ok(EventData::FirmwareBlob { base, length })
}

fn blob2(data: &[u8]) -> Result<EventData, WireError> {
    let mut r = Reader::new(data);
    let size = r
        .u8()
        .ctx("UEFI_PLATFORM_FIRMWARE_BLOB2.BlobDescriptionSize")?;
    let description = r
        .bytes(usize::from(size))
        .ctx("UEFI_PLATFORM_FIRMWARE_BLOB2.BlobDescription")?;
    let base = r.u64_le().ctx("UEFI_PLATFORM_FIRMWARE_BLOB2.BlobBase")?;
    let length = r.u64_le().ctx("UEFI_PLATFORM_FIRMWARE_BLOB2.BlobLength")?;
    r.finish_as("UEFI_PLATFORM_FIRMWARE_BLOB2")?;
    Ok(EventData::FirmwareBlob2 {
        description: ascii_lossy(description),
        base,
        length,
    })
}

fn tagged(data: &[u8]) -> Result<EventData, WireError> {
    let mut r = Reader::new(data);
    let id = r.u32_le().ctx("TCG_PCClientTaggedEvent.taggedEventID")?;
    let size = r
        .u32_le()
        .ctx("TCG_PCClientTaggedEvent.taggedEventDataSize")?;
    let tag_data = r
        .bytes(size as usize)
        .ctx("TCG_PCClientTaggedEvent.taggedEventData")?;
    r.finish_as("TCG_PCClientTaggedEvent")?;
    Ok(EventData::Tagged {
        id,
        data: tag_data.to_vec(),
    })
}

fn spdm(data: &[u8]) -> Result<EventData, WireError> {
    let mut r = Reader::new(data);
    let signature = r
        .bytes(16)
        .ctx("TCG_DEVICE_SECURITY_EVENT_DATA.Signature")?;
    if !signature.starts_with(b"SPDM Device Sec") {
        return Err(r.invalid(
            "TCG_DEVICE_SECURITY_EVENT_DATA.Signature",
            "not \"SPDM Device Sec\"",
        ));
    }
    let version = r.u16_le().ctx("TCG_DEVICE_SECURITY_EVENT_DATA.Version")?;
    Ok(EventData::SpdmDevice {
        signature: ascii_lossy(signature),
        version,
        rest: r.rest().to_vec(),
    })
}

/// Where the parts of a `UEFI_VARIABLE_DATA` are (for [`super::proof`]).
pub(crate) struct VariableParts<'a> {
    pub guid: Guid,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// The rest of the structure, whose size field (read at `at`) said `len`
/// bytes: exactly what is left.
fn sized_rest<'a>(
    r: &mut Reader<'a>,
    len: u64,
    at: usize,
    field: &'static str,
) -> Result<&'a [u8], WireError> {
    if usize::try_from(len).ok() != Some(r.remaining()) {
        return Err(WireError::Invalid {
            field,
            offset: at,
            reason: format!("{len} bytes but {} follow", r.remaining()),
        });
    }
    Ok(r.rest())
}

/// Splits a `UEFI_VARIABLE_DATA` (exact: no bytes may follow).
pub(crate) fn variable_parts(data: &[u8]) -> Result<VariableParts<'_>, WireError> {
    let mut r = Reader::new(data);
    let guid = Guid(r.array::<16>().ctx("UEFI_VARIABLE_DATA.VariableName")?);
    let name_at = r.position();
    let name_len = r.u64_le().ctx("UEFI_VARIABLE_DATA.UnicodeNameLength")?;
    let data_at = r.position();
    let data_len = r.u64_le().ctx("UEFI_VARIABLE_DATA.VariableDataLength")?;
    let name_bytes = usize::try_from(name_len)
        .ok()
        .and_then(|n| n.checked_mul(2))
        .filter(|n| *n <= r.remaining())
        .ok_or_else(|| WireError::Invalid {
            field: "UEFI_VARIABLE_DATA.UnicodeNameLength",
            offset: name_at,
            reason: format!("{name_len} characters in {} bytes", r.remaining()),
        })?;
    let name = r.bytes(name_bytes).ctx("UEFI_VARIABLE_DATA.UnicodeName")?;
    let value = sized_rest(
        &mut r,
        data_len,
        data_at,
        "UEFI_VARIABLE_DATA.VariableDataLength",
    )?;
    Ok(VariableParts {
        guid,
        name,
        data: value,
    })
}

/// Decodes a `UEFI_VARIABLE_DATA` and, for well-known variables, its value.
pub fn variable(data: &[u8], event_type: EventType) -> Result<Variable, WireError> {
    let parts = variable_parts(data)?;
    let name = lossy_utf16(parts.name);
    let value = variable_value(parts.guid, &name, parts.data, event_type);
    Ok(Variable {
        guid: parts.guid,
        name,
        data: parts.data.to_vec(),
        value,
    })
}

fn variable_value(guid: Guid, name: &str, data: &[u8], event_type: EventType) -> VariableValue {
    let undecoded = |e: WireError| VariableValue::Undecoded {
        error: e.to_string(),
    };
    if event_type == EventType::EV_EFI_VARIABLE_AUTHORITY {
        return signature_data(data).map_or_else(undecoded, VariableValue::Signature);
    }
    let global = guid == Guid::EFI_GLOBAL_VARIABLE;
    let is_boot_entry = name.len() == 8
        && name.starts_with("Boot")
        && name
            .get(4..)
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_hexdigit()));
    match name {
        _ if data.is_empty() => VariableValue::Empty,
        "SecureBoot" | "SetupMode" | "AuditMode" | "DeployedMode" if global => match data {
            [value] => VariableValue::Byte { value: *value },
            _ => VariableValue::Undecoded {
                error: format!("{} bytes, not 1", data.len()),
            },
        },
        "BootOrder" if global => {
            if !data.len().is_multiple_of(2) {
                return VariableValue::Undecoded {
                    error: format!("{} bytes, not a list of u16", data.len()),
                };
            }
            VariableValue::BootOrder {
                order: le_u16s(data),
            }
        }
        _ if global && is_boot_entry => {
            load_option(data).map_or_else(undecoded, VariableValue::LoadOption)
        }
        "PK" | "KEK" if global => signature_lists(data)
            .map_or_else(undecoded, |lists| VariableValue::SignatureLists { lists }),
        "db" | "dbx" | "dbt" | "dbr" if guid == Guid::EFI_IMAGE_SECURITY_DATABASE => {
            signature_lists(data)
                .map_or_else(undecoded, |lists| VariableValue::SignatureLists { lists })
        }
        _ => VariableValue::Other,
    }
}

/// An `EFI_LOAD_OPTION`.
pub fn load_option(data: &[u8]) -> Result<LoadOption, WireError> {
    let mut r = Reader::new(data);
    let attributes = r.u32_le().ctx("EFI_LOAD_OPTION.Attributes")?;
    let list_len = r.u16_le().ctx("EFI_LOAD_OPTION.FilePathListLength")?;
    let desc_at = r.position();
    let mut units = Vec::new();
    loop {
        let u = r.u16_le().ctx("EFI_LOAD_OPTION.Description")?;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    let description = String::from_utf16(&units).map_err(|_| WireError::Invalid {
        field: "EFI_LOAD_OPTION.Description",
        offset: desc_at,
        reason: "not UTF-16".into(),
    })?;
    let file_path_list = r
        .bytes(usize::from(list_len))
        .ctx("EFI_LOAD_OPTION.FilePathList")?;
    Ok(LoadOption {
        attributes,
        description,
        device_path: devpath::to_text(file_path_list).ok(),
        file_path_list: file_path_list.to_vec(),
        optional_data: r.rest().to_vec(),
    })
}

fn signature_data(data: &[u8]) -> Result<Signature, WireError> {
    let mut r = Reader::new(data);
    let owner = Guid(r.array::<16>().ctx("EFI_SIGNATURE_DATA.SignatureOwner")?);
    Ok(Signature {
        owner,
        data: r.rest().to_vec(),
    })
}

/// A sequence of `EFI_SIGNATURE_LIST`s (PK, KEK, db, dbx).
pub fn signature_lists(data: &[u8]) -> Result<Vec<SignatureList>, WireError> {
    let mut r = Reader::new(data);
    let mut lists = Vec::new();
    while r.remaining() > 0 {
        let at = r.position();
        let signature_type = Guid(r.array::<16>().ctx("EFI_SIGNATURE_LIST.SignatureType")?);
        let list_size = r.u32_le().ctx("EFI_SIGNATURE_LIST.SignatureListSize")? as usize;
        let header_size = r.u32_le().ctx("EFI_SIGNATURE_LIST.SignatureHeaderSize")? as usize;
        let sig_size = r.u32_le().ctx("EFI_SIGNATURE_LIST.SignatureSize")? as usize;
        let body = list_size
            .checked_sub(28)
            .and_then(|b| b.checked_sub(header_size))
            .filter(|b| sig_size >= 16 && b % sig_size == 0)
            .ok_or_else(|| WireError::Invalid {
                field: "EFI_SIGNATURE_LIST.SignatureListSize",
                offset: at,
                reason: format!(
                    "list of {list_size} bytes, header {header_size}, signatures of {sig_size}"
                ),
            })?;
        let _header = r
            .bytes(header_size)
            .ctx("EFI_SIGNATURE_LIST.SignatureHeader")?;
        let sigs = r.bytes(body).ctx("EFI_SIGNATURE_LIST.Signatures")?;
        let signatures = sigs
            .chunks_exact(sig_size)
            .map(signature_data)
            .collect::<Result<Vec<_>, _>>()?;
        lists.push(SignatureList {
            signature_type,
            signatures,
        });
    }
    Ok(lists)
}

fn image(data: &[u8]) -> Result<ImageLoad, WireError> {
    let mut r = Reader::new(data);
    let location = r
        .u64_le()
        .ctx("UEFI_IMAGE_LOAD_EVENT.ImageLocationInMemory")?;
    let length = r
        .u64_le()
        .ctx("UEFI_IMAGE_LOAD_EVENT.ImageLengthInMemory")?;
    let link_time_address = r
        .u64_le()
        .ctx("UEFI_IMAGE_LOAD_EVENT.ImageLinkTimeAddress")?;
    let path_at = r.position();
    let path_len = r.u64_le().ctx("UEFI_IMAGE_LOAD_EVENT.LengthOfDevicePath")?;
    let path = sized_rest(
        &mut r,
        path_len,
        path_at,
        "UEFI_IMAGE_LOAD_EVENT.LengthOfDevicePath",
    )?;
    Ok(ImageLoad {
        location,
        length,
        link_time_address,
        device_path: devpath::to_text(path).ok(),
        device_path_bytes: path.to_vec(),
    })
}

fn ascii_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    bytes
        .get(..end)
        .unwrap_or(&[])
        .iter()
        .map(|b| {
            if is_text_byte(*b) {
                char::from(*b)
            } else {
                '?'
            }
        })
        .collect()
}

fn lossy_utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = le_u16s(bytes).into_iter().take_while(|u| *u != 0).collect();
    String::from_utf16_lossy(&units)
}

impl EventData {
    /// A one-line summary for `trustpool eventlog show`.
    pub fn summary(&self) -> String {
        match self {
            EventData::SpecId(s) => {
                let algs: Vec<String> = s
                    .algorithms
                    .iter()
                    .map(|a| super::alg::alg_id_name(a.alg_id))
                    .collect();
                format!(
                    "Spec ID Event03, spec {}.{} errata {}, banks {}",
                    s.spec_version_major,
                    s.spec_version_minor,
                    s.spec_errata,
                    algs.join(",")
                )
            }
            EventData::StartupLocality { locality } => format!("StartupLocality {locality}"),
            EventData::NoAction { signature, rest } => {
                format!("{signature:?} + {} bytes", rest.len())
            }
            EventData::Separator { value } => match value {
                0 => "separator".to_string(),
                v => format!("separator 0x{v:08x} (error)"),
            },
            EventData::Text { text } => format!("{text:?}"),
            EventData::Variable(v) => variable_summary(v),
            EventData::Image(i) => format!(
                "image at 0x{:x}, {} bytes{}",
                i.location,
                i.length,
                i.device_path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            ),
            EventData::FirmwareBlob { base, length } => {
                format!("blob at 0x{base:x}, {length} bytes")
            }
            EventData::FirmwareBlob2 {
                description,
                base,
                length,
            } => format!("{description:?} at 0x{base:x}, {length} bytes"),
            EventData::HandoffTables {
                description,
                tables,
            } => {
                let guids: Vec<String> = tables.iter().map(|t| t.guid.to_string()).collect();
                format!(
                    "{}{} table(s): {}",
                    description
                        .as_deref()
                        .map(|d| format!("{d:?}, "))
                        .unwrap_or_default(),
                    tables.len(),
                    guids.join(" ")
                )
            }
            EventData::Gpt(g) => format!(
                "GPT disk {}, {} partition(s)",
                g.disk_guid,
                g.partitions.len()
            ),
            EventData::Tagged { id, data } => {
                let text = ascii(data)
                    .map(|t| format!(" {}", t.summary()))
                    .unwrap_or_default();
                format!("tag 0x{id:x}, {} bytes{text}", data.len())
            }
            EventData::SpdmDevice {
                signature, version, ..
            } => format!("{signature:?} version {version}"),
            EventData::Bytes { data } => hex_preview(data),
            EventData::Raw { error, data } => match error {
                Some(e) => format!("raw ({e}): {}", hex_preview(data)),
                None => format!("raw: {}", hex_preview(data)),
            },
        }
    }
}

fn hex_preview(data: &[u8]) -> String {
    if data.len() <= 16 {
        hex::encode(data)
    } else {
        format!(
            "{}… ({} bytes)",
            hex::encode(data.get(..16).unwrap_or(data)),
            data.len()
        )
    }
}

fn variable_summary(v: &Variable) -> String {
    let value = match &v.value {
        VariableValue::Byte { value } => format!("= {value}"),
        VariableValue::Empty => "(empty)".to_string(),
        VariableValue::BootOrder { order } => {
            let order: Vec<String> = order.iter().map(|n| format!("{n:04X}")).collect();
            format!("= {}", order.join(","))
        }
        VariableValue::LoadOption(o) => format!(
            "{:?} {}",
            o.description,
            o.device_path
                .as_deref()
                .unwrap_or("(device path unreadable)")
        ),
        VariableValue::SignatureLists { lists } => {
            let n: usize = lists.iter().map(|l| l.signatures.len()).sum();
            format!("{} list(s), {n} signature(s)", lists.len())
        }
        VariableValue::Signature(s) => format!("owner {}, {} bytes", s.owner, s.data.len()),
        VariableValue::Other => format!("{} bytes", v.data.len()),
        VariableValue::Undecoded { error } => {
            format!("{} bytes (undecoded: {error})", v.data.len())
        }
    };
    format!("{} {value}", v.name)
}
