//! A firmware boot on swtpm, from a real firmware's event log: every
//! event the log says was extended is extended into the swtpm, in order,
//! so that the TPM's PCRs are what that firmware would have left and the
//! log replays to the quote, as on a real host. The lab's hosts and the
//! measured-boot tests use the OVMF captures of
//! evidence/testdata/eventlog/ovmf/ (made by scripts/ovmf-eventlog).

use crate::swtpm::Swtpm;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use trustpool_evidence::eventlog::{parse, Alg, EventType};

/// The directory of the real OVMF logs.
pub fn ovmf_logs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../evidence/testdata/eventlog/ovmf")
}

/// The bytes of one OVMF capture (`ovmf-default`, `ovmf-bootorder`,
/// `ovmf-secboot`…).
pub fn ovmf_log(stem: &str) -> Result<Vec<u8>> {
    let path = ovmf_logs().join(format!("{stem}.bin"));
    std::fs::read(&path).with_context(|| format!("read {}", path.display()))
}

/// Where an agent run with `--root ROOT` reads the UEFI log.
pub const UEFI_LOG_PATH: &str = "sys/kernel/security/tpm0/binary_bios_measurements";

/// Extends the sha256 digest of every event of `log` below PCR 17 into
/// the (freshly started) swtpm, at locality 0, over one TPM connection;
/// returns how many extends were made. The log must start at locality 0
/// (no StartupLocality 3/4 event: swtpm cannot start at another). No other
/// client may be connected meanwhile.
pub fn boot(swtpm: &Swtpm, log: &[u8]) -> Result<usize> {
    use tss_esapi::{
        handles::PcrHandle,
        interface_types::{algorithm::HashingAlgorithm, session_handles::AuthSession},
        structures::{Digest, DigestValues},
        tcti_ldr::TctiNameConf,
        tss2_esys::ESYS_TR_PCR0,
    };
    let parsed = parse(log).context("the firmware log does not parse")?;
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&swtpm.tcti())?)
        .context("open a TPM context on swtpm")?;
    let mut extends = 0;
    for e in &parsed.events {
        if e.event_type == EventType::EV_NO_ACTION {
            if trustpool_evidence::eventlog::replay::startup_locality(e).is_some_and(|l| l != 0) {
                bail!(
                    "event {}: a StartupLocality other than 0, which swtpm cannot boot",
                    e.number
                );
            }
            continue;
        }
        if e.pcr >= 17 {
            continue;
        }
        let Some(digest) = e.digest(Alg::Sha256) else {
            bail!("event {} has no sha256 digest", e.number);
        };
        let handle = PcrHandle::try_from(ESYS_TR_PCR0 + e.pcr)?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, Digest::try_from(digest.to_vec())?);
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.pcr_extend(handle, values)
        })
        .with_context(|| format!("PCR_Extend({}) for event {}", e.pcr, e.number))?;
        extends += 1;
    }
    Ok(extends)
}

/// Writes `log` where an agent with `--root root` reads its UEFI log.
pub fn install_log(root: &Path, log: &[u8]) -> Result<PathBuf> {
    let path = root.join(UEFI_LOG_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&path, log).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Reads sha256 PCRs of the swtpm (at most 8 per TPM2_PCR_Read, as the
/// TPM returns). No other client may be connected meanwhile.
pub fn read_sha256_pcrs(
    swtpm: &Swtpm,
    pcrs: &[u8],
) -> Result<std::collections::BTreeMap<u8, [u8; 32]>> {
    use tss_esapi::{
        interface_types::algorithm::HashingAlgorithm,
        structures::{PcrSelectionListBuilder, PcrSlot},
        tcti_ldr::TctiNameConf,
    };
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&swtpm.tcti())?)
        .context("open a TPM context on swtpm")?;
    let mut out = std::collections::BTreeMap::new();
    for chunk in pcrs.chunks(8) {
        let slots: Vec<PcrSlot> = chunk
            .iter()
            .map(|i| PcrSlot::try_from(1u32 << i).context("PCR slot"))
            .collect::<Result<_>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()?;
        let (_, _, digests) = ctx.pcr_read(selection)?;
        let values = digests.value();
        if values.len() != chunk.len() {
            bail!(
                "PCR_Read returned {} values for {} PCRs",
                values.len(),
                chunk.len()
            );
        }
        for (i, d) in chunk.iter().zip(values) {
            let v: [u8; 32] = d
                .value()
                .try_into()
                .context("a sha256 PCR value is 32 bytes")?;
            out.insert(*i, v);
        }
    }
    Ok(out)
}
