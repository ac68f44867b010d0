//! Errors of the TPM layer.

use std::path::PathBuf;

/// Raw `TSS2_RC` values the agent cares about (TPM layer, format one codes
/// are compared without their parameter/handle/session number bits).
pub mod rc {
    /// TPM_RC_INTEGRITY (format one, error number 0x1f): e.g. a credential
    /// blob made for another AK name or another EK.
    pub const INTEGRITY: u32 = 0x09f;
    /// TPM_RC_HANDLE (format one, 0x0b): e.g. an NV index that is not defined.
    pub const HANDLE: u32 = 0x08b;
    /// TPM_RC_LOCALITY (warning 0x107): command not allowed at this locality.
    pub const LOCALITY: u32 = 0x907;
    /// TPM_RC_OBJECT_MEMORY (warning 0x902): no free transient object slot.
    pub const OBJECT_MEMORY: u32 = 0x902;
    /// TPM_RC_SESSION_MEMORY (warning 0x903): no free session slot.
    pub const SESSION_MEMORY: u32 = 0x903;
}

/// An error of the agent's TPM layer. Every variant says which operation
/// failed; TPM errors carry the response code and its text.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string could not be parsed or the TCTI could not be opened.
    #[error("cannot open TPM via TCTI {tcti:?}: {source}")]
    Open {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },

    /// A TPM (or TSS) command failed. `op` names what we were doing.
    #[error("TPM operation {op} failed: {source} ({})", rc_text(.source))]
    Tpm {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },

    /// Reading or writing the agent's TPM state directory (AK blobs) failed.
    #[error("TPM state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The caller passed something unusable (PCR index > 23, nonce too long,
    /// credential blob not a TPM2B_ID_OBJECT, ...). Nothing was sent to the TPM.
    #[error("invalid input for {op}: {reason}")]
    InvalidInput { op: &'static str, reason: String },

    /// The TPM answered, but the answer is not what it must be (e.g. the quote
    /// covers other PCRs than requested).
    #[error("unexpected TPM response in {op}: {reason}")]
    Unexpected { op: &'static str, reason: String },

    /// PCRs kept changing between TPM2_Quote and TPM2_PCR_Read.
    #[error("PCR values changed between quote and PCR read in {attempts} consecutive attempts")]
    PcrRace { attempts: u32 },

    /// The TPM worker thread is gone (it could not be started or it panicked).
    #[error("the TPM worker thread is not running")]
    WorkerGone,
}

impl TpmError {
    pub(crate) fn tpm(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
        move |source| TpmError::Tpm { op, source }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> TpmError {
        TpmError::InvalidInput {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn unexpected(op: &'static str, reason: impl Into<String>) -> TpmError {
        TpmError::Unexpected {
            op,
            reason: reason.into(),
        }
    }

    /// The raw `TSS2_RC` if this error came from the TPM or the TSS stack
    /// (e.g. `0x1df` for TPM_RC_INTEGRITY on parameter 1).
    pub fn response_code(&self) -> Option<u32> {
        match self {
            TpmError::Open { source, .. } | TpmError::Tpm { source, .. } => raw_rc(source),
            _ => None,
        }
    }

    /// The response code with the parameter/handle/session number bits of
    /// format-one codes cleared, comparable with the constants in [`rc`].
    pub fn response_code_base(&self) -> Option<u32> {
        self.response_code().map(base_rc)
    }

    /// True if the TPM rejected the command with the given base code (see [`rc`]).
    pub fn is_tpm_rc(&self, base: u32) -> bool {
        self.response_code_base() == Some(base)
    }

    /// True if the error came from the transport (TCTI layer), e.g. the TPM
    /// connection was lost.
    pub fn is_transport(&self) -> bool {
        matches!(self.response_code(), Some(rc) if layer(rc) == TCTI_LAYER)
    }

    /// True if the TPM context this error came from must not be used again:
    /// the next operation opens a new one.
    ///
    /// A context is kept only when the TPM answered the command (a TPM
    /// response code, also when a resource manager relays it) or when the
    /// failure is ours (invalid input, an answer we refuse, the state
    /// directory, the tss-esapi wrapper). Everything else from the TSS stack
    /// discards it: a TCTI error (connection lost, TPM gone), ESYS errors
    /// such as `TSS2_ESYS_RC_BAD_SEQUENCE` (a context left mid-command by a
    /// failed call is unusable for good), SYS/MU/resource-manager errors, and
    /// a failed open (there is no context).
    pub fn discards_context(&self) -> bool {
        match self {
            TpmError::Open { .. } => true,
            TpmError::Tpm { source, .. } => match raw_rc(source) {
                Some(rc) => !matches!(layer(rc), TPM_LAYER | RESMGR_TPM_LAYER),
                None => false,
            },
            TpmError::State { .. }
            | TpmError::InvalidInput { .. }
            | TpmError::Unexpected { .. }
            | TpmError::PcrRace { .. }
            | TpmError::WorkerGone => false,
        }
    }
}

/// TSS2_RC layers (bits 16-23 of a `TSS2_RC`).
const TPM_LAYER: u32 = 0;
const TCTI_LAYER: u32 = 10;
/// TPM response codes relayed (or generated in TPM format) by a resource manager.
const RESMGR_TPM_LAYER: u32 = 12;

fn layer(rc: u32) -> u32 {
    (rc >> 16) & 0xff
}

pub(crate) fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(c)) => Some(c.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(c)) => Some(c.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::Success) => Some(0),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

/// For TPM-layer codes: clears the parameter/handle/session number of
/// format-one codes (bit 6 and bits 8-11), so that e.g. `0x1df` becomes
/// `0x09f` (TPM_RC_INTEGRITY). Codes of the TSS layers are returned unchanged.
pub(crate) fn base_rc(rc: u32) -> u32 {
    if rc >> 16 != 0 {
        return rc;
    }
    if rc & 0x80 != 0 {
        // format one: error number in bits 0-5, format bit 7
        rc & 0xbf
    } else {
        rc
    }
}

fn rc_text(e: &tss_esapi::Error) -> String {
    match raw_rc(e) {
        Some(rc) => {
            let layer = (rc >> 16) & 0xff;
            let layer_name = match layer {
                0 => "TPM",
                6 => "TSS feature",
                7 => "TSS ESYS",
                8 => "TSS SYS",
                9 => "TSS MU",
                10 => "TSS TCTI",
                11 | 12 => "resource manager",
                _ => "TSS",
            };
            format!("{layer_name} response code {rc:#x}")
        }
        None => "error in the tss-esapi wrapper".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_rc_strips_parameter_number() {
        // TPM_RC_INTEGRITY on parameter 1 as returned by ActivateCredential
        assert_eq!(base_rc(0x1df), rc::INTEGRITY);
        // TSS layer codes are not mistaken for TPM codes
        assert_eq!(base_rc(0x000a_000a), 0x000a_000a);
        assert_eq!(base_rc(0x18b), rc::HANDLE);
        assert_eq!(base_rc(0x902), rc::OBJECT_MEMORY);
        assert_eq!(base_rc(0x907), rc::LOCALITY);
    }

    fn tss(rc: u32) -> TpmError {
        TpmError::Tpm {
            op: "t",
            source: tss_esapi::Error::Tss2Error(
                tss_esapi::constants::response_code::Tss2ResponseCode::from(rc),
            ),
        }
    }

    #[test]
    fn only_an_answer_of_the_tpm_keeps_the_context() {
        // the TPM answered: integrity, handle, object memory, relayed by a resource manager
        for rc in [0x1df, 0x18b, 0x902, 0x000c_0902] {
            assert!(!tss(rc).discards_context(), "{rc:#x}");
        }
        // TCTI I/O error (connection lost), ESYS bad sequence and bad
        // reference (a context poisoned by a failed call), SYS, MU and
        // resource-manager errors
        for rc in [
            0x000a_000a,
            0x000a_0005,
            0x0007_0007,
            0x0007_0005,
            0x0008_0007,
            0x0009_0009,
            0x000b_0001,
        ] {
            assert!(tss(rc).discards_context(), "{rc:#x}");
        }
        let open = TpmError::Open {
            tcti: "swtpm:port=1".into(),
            source: tss_esapi::Error::Tss2Error(
                tss_esapi::constants::response_code::Tss2ResponseCode::from(0x000a_000a),
            ),
        };
        assert!(open.discards_context());
        let wrapper = TpmError::Tpm {
            op: "t",
            source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam),
        };
        assert!(!wrapper.discards_context());
        for ours in [
            TpmError::invalid("t", "x"),
            TpmError::unexpected("t", "x"),
            TpmError::PcrRace { attempts: 5 },
        ] {
            assert!(!ours.discards_context(), "{ours}");
        }
    }
}
