//! Whether an event's data is what its digest is the hash of ("data
//! proven").
//!
//! For some event types the PC Client PFP defines the digest as the hash
//! of the event data itself (EV_SEPARATOR, EV_EFI_VARIABLE_*, EV_EFI_ACTION,
//! EV_EFI_GPT_EVENT…): there the data can be checked, and an event whose
//! data does not hash to its digest is [`DataProof::NotProven`] — the data
//! was changed after the measurement, or the digest is of something else.
//! For others (EV_EFI_BOOT_SERVICES_APPLICATION: the PE image;
//! EV_EFI_PLATFORM_FIRMWARE_BLOB: a firmware volume) the digest is of
//! something the log does not contain: [`DataProof::NotApplicable`], the
//! data is an unverified description. A few types are measured either way
//! depending on who wrote them (EV_IPL: GRUB and systemd-boot hash the
//! string they log, a boot loader measuring a file logs its name; EV_EVENT_TAG:
//! the Linux EFI stub hashes the initrd): for those a match is `Proven`
//! and no match is `NotApplicable`.
//!
//! The accepted forms ([`ProofForm`]):
//! * the whole event data (every data-hashed type);
//! * for EV_EFI_VARIABLE_BOOT / BOOT2 also `VariableData` only: the PFP
//!   says the whole `UEFI_VARIABLE_DATA`, but EDK2 (and so OVMF and most
//!   firmware) hashes only the variable's contents for Boot#### and
//!   BootOrder;
//! * for string types the data without its trailing NULs (GRUB logs the
//!   NUL, hashes the string without it).
//!
//! Which one matched is reported, per bank.

use super::alg::Alg;
use super::events::variable_parts;
use super::types::EventType;
use super::{ser_alg_id, Event};
use serde::Serialize;

/// What was hashed to give the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofForm {
    /// The whole event data.
    Data,
    /// Only `VariableData` of the `UEFI_VARIABLE_DATA` (EDK2's boot variables).
    VariableData,
    /// The data without its trailing NUL bytes.
    DataWithoutNul,
}

/// The data-proven flag of one digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DataProof {
    /// The digest is the hash of the data (in this form).
    Proven {
        /// What was hashed.
        form: ProofForm,
    },
    /// The type says the digest is the hash of the data, and it is not.
    NotProven,
    /// The digest is of something else (an image, a firmware volume, a
    /// file), or the event is never extended (EV_NO_ACTION).
    NotApplicable,
    /// The algorithm is unknown to this crate: not checked.
    Unchecked,
}

/// The flag of one bank's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BankProof {
    /// `TPM_ALG_ID` of the digest.
    #[serde(rename = "alg", serialize_with = "ser_alg_id")]
    pub alg_id: u16,
    /// The flag.
    #[serde(flatten)]
    pub proof: DataProof,
}

/// The flag of a whole event, over its digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventProof {
    /// Every digest this crate can check is the hash of the data.
    Proven,
    /// Some digest is not the hash of the data although the type says it
    /// must be, or the banks disagree (some proven, some not).
    NotProven,
    /// The data proves nothing (see [`DataProof::NotApplicable`]).
    NotApplicable,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The digest must be the hash of the data.
    Must,
    /// It may be: a match proves the data, no match is not applicable.
    May,
    /// It is not.
    Never,
}

fn rule(t: EventType) -> Rule {
    match t {
        EventType::EV_SEPARATOR
        | EventType::EV_ACTION
        | EventType::EV_EFI_ACTION
        | EventType::EV_S_CRTM_VERSION
        | EventType::EV_COMPACT_HASH
        | EventType::EV_OMIT_BOOT_DEVICE_EVENTS
        | EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT
        | EventType::EV_EFI_VARIABLE_BOOT2
        | EventType::EV_EFI_VARIABLE_AUTHORITY
        | EventType::EV_EFI_SPDM_DEVICE_POLICY
        | EventType::EV_EFI_SPDM_DEVICE_AUTHORITY
        | EventType::EV_EFI_GPT_EVENT
        | EventType::EV_EFI_GPT_EVENT2 => Rule::Must,
        EventType::EV_IPL
        | EventType::EV_IPL_PARTITION_DATA
        | EventType::EV_EVENT_TAG
        | EventType::EV_PLATFORM_CONFIG_FLAGS
        | EventType::EV_TABLE_OF_DEVICES
        | EventType::EV_NONHOST_CONFIG
        | EventType::EV_NONHOST_INFO => Rule::May,
        _ => Rule::Never,
    }
}

/// The candidate pre-images of an event's digests, in the order tried.
fn forms(event: &Event) -> Vec<(ProofForm, &[u8])> {
    let data = event.data.as_slice();
    let mut out = vec![(ProofForm::Data, data)];
    match event.event_type {
        EventType::EV_EFI_VARIABLE_BOOT | EventType::EV_EFI_VARIABLE_BOOT2 => {
            if let Ok(parts) = variable_parts(data) {
                out.push((ProofForm::VariableData, parts.data));
            }
        }
        EventType::EV_ACTION
        | EventType::EV_EFI_ACTION
        | EventType::EV_IPL
        | EventType::EV_OMIT_BOOT_DEVICE_EVENTS => {
            let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            if end < data.len() {
                out.push((ProofForm::DataWithoutNul, data.get(..end).unwrap_or(&[])));
            }
        }
        _ => {}
    }
    out
}

/// The flag of each digest of `event`, in record order.
pub fn check(event: &Event) -> Vec<BankProof> {
    let rule = rule(event.event_type);
    let forms = if rule == Rule::Never {
        Vec::new()
    } else {
        forms(event)
    };
    event
        .digests
        .iter()
        .map(|d| {
            let proof = match (rule, Alg::from_id(d.alg_id)) {
                (Rule::Never, _) => DataProof::NotApplicable,
                (_, None) => DataProof::Unchecked,
                (_, Some(alg)) => {
                    match forms
                        .iter()
                        .find(|(_, bytes)| alg.digest(bytes) == d.digest)
                    {
                        Some((form, _)) => DataProof::Proven { form: *form },
                        None if rule == Rule::Must => DataProof::NotProven,
                        None => DataProof::NotApplicable,
                    }
                }
            };
            BankProof {
                alg_id: d.alg_id,
                proof,
            }
        })
        .collect()
}

/// The flag of the whole event from its banks' flags.
pub fn summarize(proofs: &[BankProof]) -> EventProof {
    let proven = proofs
        .iter()
        .filter(|p| matches!(p.proof, DataProof::Proven { .. }))
        .count();
    let not_proven = proofs.iter().any(|p| p.proof == DataProof::NotProven);
    let not_applicable = proofs.iter().any(|p| p.proof == DataProof::NotApplicable);
    if not_proven || (proven > 0 && not_applicable) {
        EventProof::NotProven
    } else if proven > 0 {
        EventProof::Proven
    } else {
        EventProof::NotApplicable
    }
}

/// [`check`] then [`summarize`].
pub fn event_proof(event: &Event) -> EventProof {
    summarize(&check(event))
}
