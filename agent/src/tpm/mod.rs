//! The agent's TPM layer over tss-esapi 7.7: EK and AK, credential activation,
//! quotes and PCR reads.
//!
//! The TCTI is a string as understood by tpm2-tss: `device:/dev/tpmrm0` on a
//! compute node (kernel resource manager), `swtpm:host=127.0.0.1,port=P` in
//! the lab.
//!
//! # Resource hygiene
//!
//! A TPM has very few slots (swtpm: 3 transient objects, 3 sessions, and no
//! resource manager in front of it). Every public operation of [`Tpm`] loads
//! what it needs (EK, AK, policy session) and flushes every transient object
//! and session it created before it returns, on success and on every error
//! path. This is enforced by an internal guard (`Scope`) that flushes in its
//! `Drop`. Nothing stays loaded between operations, so an agent can run for
//! months (and share a TPM without resource manager with other tools).
//!
//! # EK
//!
//! The EK is the TCG default-template EK (`ek::create_ek_object_2`, the same
//! template as `swtpm_setup` and the TPM vendors use), so its public key
//! matches the EK certificate in NV. Re-creating a primary key can be slow
//! (RSA CreatePrimary: ~60 ms on swtpm, up to seconds on a discrete TPM), so
//! the EK and the loaded AK are kept as *saved contexts* (TPM2_ContextSave:
//! encrypted and integrity-protected by the TPM, no TPM slot used) and
//! brought back with TPM2_ContextLoad for each operation, then flushed again.
//! A saved context becomes invalid at TPM Reset (reboot) or when the
//! endorsement seed changes; then the keys are re-created/re-loaded from the
//! template and the AK blobs.
//!
//! # AK
//!
//! A restricted signing key (RSASSA-2048 or ECDSA-P256, SHA-256) created under
//! the EK. Its blobs are kept in the state directory (`ak.pub`, `ak.priv`,
//! mode 0600, written atomically) so a restarted agent keeps its enrolled AK.
//! If the stored blobs cannot be loaded by the TPM (TPM cleared, EK changed),
//! a warning says so and a new AK is created; the server will see a new AK
//! and the host must be re-enrolled (by design).

mod error;
mod state;
mod worker;

pub use error::{rc, TpmError};
pub use worker::{TpmHealth, TpmUnusable, TpmWorker};

use sha2::{Digest as _, Sha256};
use std::convert::TryFrom;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tracing::{debug, info, warn};
use tss_esapi::{
    abstraction::{ak, ek, pcr as tss_pcr, AsymmetricAlgorithmSelection},
    attributes::SessionAttributesBuilder,
    constants::{CapabilityType, PropertyTag, SessionType},
    handles::{
        AuthHandle, KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, SessionHandle,
        TpmHandle,
    },
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        resource_handles::NvAuth,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        AttestInfo, CapabilityData, Data, EncryptedSecret, IdObject, MaxNvBuffer, PcrSelectionList,
        PcrSelectionListBuilder, PcrSlot, Private, Public, SignatureScheme, SymmetricDefinition,
    },
    tcti_ldr::TctiNameConf,
    traits::{Marshall, UnMarshall},
    utils::TpmsContext,
    Context,
};

/// How often `quote` re-quotes when a PCR changed between TPM2_Quote and
/// TPM2_PCR_Read before it gives up with [`TpmError::PcrRace`].
pub const QUOTE_ATTEMPTS: u32 = 5;

/// Highest PCR index (PC Client TPMs have 24 PCRs per bank).
pub const MAX_PCR: u32 = 23;

/// Which endorsement key to use. The EK certificate of each lives at the TCG
/// EK Credential Profile NV index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum EkAlg {
    /// RSA-2048, template L-1; certificate at NV 0x01c00002.
    #[default]
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// ECC NIST P-384, high-range template H-3; certificate at NV 0x01c00016
    /// (swtpm_setup creates this one for its ECC EK).
    #[serde(rename = "ecc-p384")]
    EccP384,
    /// ECC NIST P-256, template L-2; certificate at NV 0x01c0000a (swtpm 0.7
    /// does not provision one).
    #[serde(rename = "ecc-p256")]
    EccP256,
}

impl EkAlg {
    /// NV index of this EK's certificate (TCG EK Credential Profile 2.x).
    pub fn cert_nv_index(self) -> u32 {
        match self {
            EkAlg::Rsa2048 => 0x01c0_0002,
            EkAlg::EccP384 => 0x01c0_0016,
            EkAlg::EccP256 => 0x01c0_000a,
        }
    }

    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            EkAlg::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkAlg::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
            EkAlg::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            EkAlg::Rsa2048 => "rsa2048",
            EkAlg::EccP384 => "ecc-p384",
            EkAlg::EccP256 => "ecc-p256",
        }
    }
}

impl fmt::Display for EkAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EkAlg {
    type Err = String;
    /// `rsa2048`, `ecc-p384`, `ecc-p256` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsa2048" | "rsa" => Ok(EkAlg::Rsa2048),
            "ecc-p384" | "p384" => Ok(EkAlg::EccP384),
            "ecc-p256" | "p256" | "ecc" => Ok(EkAlg::EccP256),
            _ => Err(format!(
                "unknown EK algorithm {s:?} (expected rsa2048, ecc-p384 or ecc-p256)"
            )),
        }
    }
}

/// Which attestation key to create.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum AkAlg {
    /// RSA-2048 with RSASSA-PKCS1-v1_5/SHA-256 (tpm2_checkquote 5.4 rejects RSA-PSS).
    #[default]
    #[serde(rename = "rsassa-2048")]
    RsaSsa2048,
    /// ECDSA on NIST P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

impl AkAlg {
    fn key_and_scheme(self) -> (AsymmetricAlgorithmSelection, SignatureSchemeAlgorithm) {
        match self {
            AkAlg::RsaSsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
            AkAlg::EcdsaP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
        }
    }

    fn matches(self, public: &Public) -> bool {
        matches!(
            (self, public),
            (AkAlg::RsaSsa2048, Public::Rsa { .. }) | (AkAlg::EcdsaP256, Public::Ecc { .. })
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            AkAlg::RsaSsa2048 => "rsassa-2048",
            AkAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

impl fmt::Display for AkAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AkAlg {
    type Err = String;
    /// `rsassa-2048`, `ecdsa-p256` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsassa-2048" | "rsassa" | "rsa" => Ok(AkAlg::RsaSsa2048),
            "ecdsa-p256" | "ecdsa" | "ecc" => Ok(AkAlg::EcdsaP256),
            _ => Err(format!(
                "unknown AK algorithm {s:?} (expected rsassa-2048 or ecdsa-p256)"
            )),
        }
    }
}

/// What the agent sends at enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// EK public area, marshalled TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
    /// EK certificate (DER) from the EK's NV index, if the TPM has one.
    pub ek_certificate: Option<Vec<u8>>,
    /// AK public area, marshalled TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
    /// AK name: nameAlg (0x000b) || SHA-256(TPMT_PUBLIC).
    pub ak_name: Vec<u8>,
}

/// A TPM2_Quote over the SHA-256 bank and the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// TPMS_ATTEST exactly as signed.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// `(pcr index, sha256 value)` in ascending PCR order, read right after the
    /// quote; their digest equals the quote's pcrDigest (checked here).
    pub pcr_values: Vec<(u32, Vec<u8>)>,
}

/// What is loaded in the TPM (diagnostics, resource-leak checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedHandles {
    /// Handles of loaded transient objects (0x80xxxxxx).
    pub transient_objects: Vec<u32>,
    /// Handles of loaded sessions (HMAC 0x02xxxxxx, policy 0x03xxxxxx).
    pub loaded_sessions: Vec<u32>,
    /// TPM_PT_HR_TRANSIENT_AVAIL: free transient object slots (estimate).
    pub transient_avail: Option<u32>,
    /// TPM_PT_HR_LOADED_AVAIL: free session slots (estimate).
    pub sessions_avail: Option<u32>,
}

/// The agent's handle on the TPM. Blocking (TPM commands take 5-200 ms on
/// swtpm, up to seconds on a discrete TPM): use it from a dedicated thread,
/// e.g. through [`TpmWorker`].
///
/// # Lost connection
///
/// The connection is either open or absent. An operation that fails in a
/// way that leaves the context unusable (see [`TpmError::discards_context`]:
/// the TPM went away, a TCTI or ESYS error) discards it; the next operation
/// opens a new one (a context that was open before the operation began is
/// reopened at once, once: it may have died while idle). Nothing is lost
/// with the context: the AK blobs are in the state directory and the EK is
/// re-created from its template, so a TPM that comes back (swtpm or the
/// resource manager restarted) serves the same EK and AK again.
/// [`Tpm::is_open`] says whether a context is open.
///
/// The discarded context could not flush what it had loaded. A TPM without
/// resource manager (swtpm, `/dev/tpm0`) keeps those objects and sessions
/// in its few slots, so a reopened context first flushes every transient
/// object and loaded session the TPM lists: on such a TPM only one
/// connection exists at a time, so they are leftovers; behind a resource
/// manager (`/dev/tpmrm0`) a new connection sees none.
pub struct Tpm {
    conn: Connection<Context>,
    tcti: String,
    keys: Keys,
}

/// A TPM context that is either open or absent; see the section "Lost
/// connection" of [`Tpm`]. Generic over the context so that the
/// discard-and-reopen decisions are tested without a TPM.
struct Connection<C> {
    ctx: Option<C>,
}

impl<C> Connection<C> {
    fn open(ctx: C) -> Self {
        Connection { ctx: Some(ctx) }
    }

    fn is_open(&self) -> bool {
        self.ctx.is_some()
    }

    /// Runs `op` on the context, opening one with `open` if there is none.
    /// An error that [discards the context](TpmError::discards_context)
    /// drops it; if that context was already open before this call, a new
    /// one is opened and `op` runs once more. A failed open leaves no
    /// context and returns its error.
    fn run<T>(
        &mut self,
        tcti: &str,
        mut open: impl FnMut() -> Result<C, TpmError>,
        mut op: impl FnMut(&mut C) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let mut opened_here = false;
        loop {
            let ctx = match self.ctx.take() {
                Some(ctx) => ctx,
                None => {
                    let ctx = open()?;
                    info!(tcti, "TPM connection opened again");
                    opened_here = true;
                    ctx
                }
            };
            let ctx = self.ctx.insert(ctx);
            match op(ctx) {
                Err(e) if e.discards_context() => {
                    self.ctx = None;
                    if opened_here {
                        warn!(error = %e, tcti, "TPM connection failed again; discarded it, the next operation opens a new one");
                        return Err(e);
                    }
                    warn!(error = %e, tcti, "TPM connection failed; discarded it and opening a new one");
                }
                result => return result,
            }
        }
    }
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .field("state_dir", &self.keys.state_dir)
            .field("ek_alg", &self.keys.ek_alg)
            .field("ak_alg", &self.keys.ak_alg)
            .finish_non_exhaustive()
    }
}

/// Key material and caches of one agent: algorithms, state directory, the AK
/// blobs and the saved contexts of EK and AK.
struct Keys {
    state_dir: PathBuf,
    ek_alg: EkAlg,
    ak_alg: AkAlg,
    /// The AK blobs (from the state dir, or just created).
    ak_blobs: Option<AkBlobs>,
    /// Saved context of the EK (valid until TPM Reset / seed change).
    ek_saved: Option<TpmsContext>,
    /// Saved context of the loaded AK (idem).
    ak_saved: Option<TpmsContext>,
}

#[derive(Clone)]
struct AkBlobs {
    public: Public,
    private: Private,
}

/// Guard over the context: flushes (transient objects, sessions) or closes
/// (ESYS handles of persistent objects and NV indices) everything registered
/// with it when dropped, whatever the outcome of the operation.
struct Scope<'a> {
    ctx: &'a mut Context,
    flush: Vec<ObjectHandle>,
    close: Vec<ObjectHandle>,
}

impl<'a> Scope<'a> {
    fn new(ctx: &'a mut Context) -> Self {
        Scope {
            ctx,
            flush: Vec::new(),
            close: Vec::new(),
        }
    }
    fn flush_later(&mut self, h: impl Into<ObjectHandle>) {
        self.flush.push(h.into());
    }
    fn close_later(&mut self, h: impl Into<ObjectHandle>) {
        self.close.push(h.into());
    }
}

impl Deref for Scope<'_> {
    type Target = Context;
    fn deref(&self) -> &Context {
        self.ctx
    }
}

impl DerefMut for Scope<'_> {
    fn deref_mut(&mut self) -> &mut Context {
        self.ctx
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        while let Some(h) = self.flush.pop() {
            if let Err(e) = self.ctx.flush_context(h) {
                warn!(handle = ?h, error = %e, "TPM: flushing a transient handle failed");
            }
        }
        while let Some(mut h) = self.close.pop() {
            if let Err(e) = self.ctx.tr_close(&mut h) {
                debug!(handle = ?h, error = %e, "TPM: closing an ESYS handle failed");
            }
        }
    }
}

fn open_context(tcti: &str) -> Result<Context, TpmError> {
    let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::Open {
        tcti: tcti.to_string(),
        source,
    })?;
    Context::new(conf).map_err(|source| TpmError::Open {
        tcti: tcti.to_string(),
        source,
    })
}

/// Opens a context again after one was discarded, and flushes what the TPM
/// still holds loaded (see "Lost connection" in [`Tpm`]). A flush that
/// fails is logged; the operation that follows finds out whether the TPM
/// is usable.
fn reopen_context(tcti: &str) -> Result<Context, TpmError> {
    let mut ctx = open_context(tcti)?;
    let leftovers = match Tpm::loaded_handles_once(&mut ctx) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, tcti, "cannot list what the TPM holds loaded after reopening it");
            return Ok(ctx);
        }
    };
    let mut flushed = Vec::new();
    for raw in leftovers
        .transient_objects
        .iter()
        .chain(&leftovers.loaded_sessions)
    {
        let flush = TpmHandle::try_from(*raw)
            .and_then(|h| ctx.execute_without_session(|c| c.tr_from_tpm_public(h)))
            .and_then(|h| ctx.flush_context(h));
        match flush {
            // tss-esapi files policy-session handles as "close, never flush":
            // it refuses its bookkeeping after TPM2_FlushContext succeeded.
            Ok(())
            | Err(tss_esapi::Error::WrapperError(
                tss_esapi::WrapperErrorKind::InvalidHandleState,
            )) => flushed.push(format!("{raw:#010x}")),
            Err(e) => {
                warn!(handle = format_args!("{raw:#010x}"), error = %e, "cannot flush a handle left loaded in the TPM")
            }
        }
    }
    if !flushed.is_empty() {
        warn!(handles = ?flushed, tcti, "flushed objects and sessions left loaded in the TPM by the lost connection");
    }
    Ok(ctx)
}

impl Tpm {
    /// Opens the TPM through `tcti` (e.g. `device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`). `state_dir` keeps the AK blobs; it
    /// is created (mode 0700) if missing. Nothing is created in the TPM yet.
    pub fn open(
        tcti: &str,
        state_dir: &Path,
        ek_alg: EkAlg,
        ak_alg: AkAlg,
    ) -> Result<Tpm, TpmError> {
        state::ensure_dir(state_dir)?;
        let ctx = open_context(tcti)?;
        Ok(Tpm {
            conn: Connection::open(ctx),
            tcti: tcti.to_string(),
            keys: Keys {
                state_dir: state_dir.to_path_buf(),
                ek_alg,
                ak_alg,
                ak_blobs: None,
                ek_saved: None,
                ak_saved: None,
            },
        })
    }

    /// The TCTI this TPM was opened with.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The EK algorithm in use.
    pub fn ek_alg(&self) -> EkAlg {
        self.keys.ek_alg
    }

    /// The AK algorithm in use.
    pub fn ak_alg(&self) -> AkAlg {
        self.keys.ak_alg
    }

    /// True while a TPM context is open; false after a failure discarded it
    /// and no new one could be opened yet (see "Lost connection" above).
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Drops the TPM connection and opens a new one (flushing leftovers, see
    /// "Lost connection" above). On error no context is left; the next
    /// operation tries to open one again.
    pub fn reopen(&mut self) -> Result<(), TpmError> {
        self.conn.ctx = None;
        self.conn.ctx = Some(reopen_context(&self.tcti)?);
        Ok(())
    }

    /// Closes the TPM connection (e.g. to let another client use a TPM that
    /// serves one connection at a time); the next operation reopens it.
    pub fn close(&mut self) {
        self.conn.ctx = None;
    }

    /// Runs `op` on the context (opened first if absent), discarding and
    /// reopening it as [`Connection::run`] says.
    fn with_connection<T>(
        &mut self,
        mut op: impl FnMut(&mut Context, &mut Keys) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let Tpm { conn, tcti, keys } = self;
        let tcti = tcti.as_str();
        conn.run(tcti, || reopen_context(tcti), |ctx| op(ctx, keys))
    }

    /// The enrolment identity: EK public and certificate, AK public and name.
    /// Creates the EK (default template) and loads the AK from the state
    /// directory, or creates and stores a new AK if there is none (or the
    /// stored one cannot be loaded by this TPM any more — logged as a warning).
    pub fn identity(&mut self) -> Result<Identity, TpmError> {
        self.with_connection(Tpm::identity_once)
    }

    fn identity_once(ctx: &mut Context, keys: &mut Keys) -> Result<Identity, TpmError> {
        let mut s = Scope::new(ctx);
        let ek = keys.load_ek(&mut s)?;
        let (ek_pub, _, _) = s
            .read_public(ek)
            .map_err(TpmError::tpm("TPM2_ReadPublic(EK)"))?;
        let ek_public = ek_pub
            .marshall()
            .map_err(TpmError::tpm("marshal EK public"))?;
        let ek_certificate = read_ek_certificate(&mut s, keys.ek_alg)?;
        let ak = keys.load_ak(&mut s, Some(ek))?;
        let (ak_pub, ak_name, _) = s
            .read_public(ak)
            .map_err(TpmError::tpm("TPM2_ReadPublic(AK)"))?;
        let ak_public = ak_pub
            .marshall()
            .map_err(TpmError::tpm("marshal AK public"))?;
        Ok(Identity {
            ek_public,
            ek_certificate,
            ak_public,
            ak_name: ak_name.value().to_vec(),
        })
    }

    /// TPM2_ActivateCredential with the AK (activateHandle, password session)
    /// and the EK (keyHandle, PolicySecret(TPM_RH_ENDORSEMENT) policy session,
    /// or a password session for high-range EKs with userWithAuth). Returns
    /// the secret the server wrapped with MakeCredential. A blob for another
    /// AK name or EK fails with TPM_RC_INTEGRITY (see [`TpmError::is_tpm_rc`]).
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        const OP: &str = "TPM2_ActivateCredential";
        if credential_blob.is_empty() || encrypted_secret.is_empty() {
            return Err(TpmError::invalid(OP, "empty credential blob or secret"));
        }
        let id_object = IdObject::try_from(credential_blob.to_vec()).map_err(|_| {
            TpmError::invalid(
                OP,
                format!(
                    "credential blob of {} bytes is not a TPM2B_ID_OBJECT",
                    credential_blob.len()
                ),
            )
        })?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(|_| {
            TpmError::invalid(
                OP,
                format!(
                    "encrypted secret of {} bytes is not a TPM2B_ENCRYPTED_SECRET",
                    encrypted_secret.len()
                ),
            )
        })?;
        self.with_connection(|ctx, keys| {
            Tpm::activate_once(ctx, keys, id_object.clone(), secret.clone())
        })
    }

    fn activate_once(
        ctx: &mut Context,
        keys: &mut Keys,
        id_object: IdObject,
        secret: EncryptedSecret,
    ) -> Result<Vec<u8>, TpmError> {
        const OP: &str = "TPM2_ActivateCredential";
        let mut s = Scope::new(ctx);
        let ek = keys.load_ek(&mut s)?;
        let ak = keys.load_ak(&mut s, Some(ek))?;
        let (ek_pub, _, _) = s
            .read_public(ek)
            .map_err(TpmError::tpm("TPM2_ReadPublic(EK)"))?;
        let ek_session = if ek_pub.object_attributes().user_with_auth() {
            AuthSession::Password
        } else {
            endorsement_policy_session(&mut s, ek_pub.name_hashing_algorithm())?
        };
        let cred = s
            .execute_with_sessions((Some(AuthSession::Password), Some(ek_session), None), |c| {
                c.activate_credential(ak, ek, id_object, secret)
            })
            .map_err(TpmError::tpm(OP))?;
        Ok(cred.value().to_vec())
    }

    /// TPM2_Quote over `pcrs` of the SHA-256 bank with `qualifying_data` as
    /// extraData (at most 64 bytes), then reads the PCR values and checks them
    /// against the quote's pcrDigest; re-quotes if a PCR changed in between
    /// (up to [`QUOTE_ATTEMPTS`] times).
    pub fn quote(&mut self, qualifying_data: &[u8], pcrs: &[u32]) -> Result<Quote, TpmError> {
        const OP: &str = "TPM2_Quote";
        let data = Data::try_from(qualifying_data.to_vec()).map_err(|_| {
            TpmError::invalid(
                OP,
                format!(
                    "qualifying data of {} bytes (at most 64)",
                    qualifying_data.len()
                ),
            )
        })?;
        let slots = normalize_pcrs(OP, pcrs)?;
        let selection = sha256_selection(OP, &slots)?;
        self.with_connection(|ctx, keys| Tpm::quote_once(ctx, keys, &data, &slots, &selection))
    }

    fn quote_once(
        ctx: &mut Context,
        keys: &mut Keys,
        data: &Data,
        slots: &[u32],
        selection: &PcrSelectionList,
    ) -> Result<Quote, TpmError> {
        const OP: &str = "TPM2_Quote";
        let mut s = Scope::new(ctx);
        // the EK is only needed if the AK's saved context is gone
        let ak = keys.load_ak(&mut s, None)?;
        for attempt in 1..=QUOTE_ATTEMPTS {
            let (attest, signature) = s
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(ak, data.clone(), SignatureScheme::Null, selection.clone())
                })
                .map_err(TpmError::tpm(OP))?;
            let pcr_values = read_sha256(&mut s, slots)?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(TpmError::unexpected(OP, "attestation is not a quote"));
            };
            if attest.extra_data().value() != data.value() {
                return Err(TpmError::unexpected(OP, "extraData differs from the nonce"));
            }
            let quoted = selected_sha256(info.pcr_selection());
            if quoted != slots {
                return Err(TpmError::unexpected(
                    OP,
                    format!("quote covers sha256 PCRs {quoted:?}, requested {slots:?}"),
                ));
            }
            if pcr_digest(&pcr_values) == info.pcr_digest().value() {
                return Ok(Quote {
                    attest: attest
                        .marshall()
                        .map_err(TpmError::tpm("marshal TPMS_ATTEST"))?,
                    signature: signature
                        .marshall()
                        .map_err(TpmError::tpm("marshal TPMT_SIGNATURE"))?,
                    pcr_values,
                });
            }
            debug!(
                attempt,
                "PCRs changed between quote and read; quoting again"
            );
        }
        Err(TpmError::PcrRace {
            attempts: QUOTE_ATTEMPTS,
        })
    }

    /// Reads SHA-256 PCR values (ascending PCR order); cheap, no key needed.
    pub fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        let slots = normalize_pcrs("TPM2_PCR_Read", pcrs)?;
        self.with_connection(|ctx, _| {
            let mut s = Scope::new(ctx);
            read_sha256(&mut s, &slots)
        })
    }

    /// Lists the transient objects and sessions loaded in the TPM and the
    /// free slots it reports. After any operation of this type both lists
    /// must be empty (unless another TPM client left something loaded).
    pub fn loaded_handles(&mut self) -> Result<LoadedHandles, TpmError> {
        self.with_connection(|ctx, _| Tpm::loaded_handles_once(ctx))
    }

    fn loaded_handles_once(ctx: &mut Context) -> Result<LoadedHandles, TpmError> {
        const OP: &str = "TPM2_GetCapability";
        let mut list = |first: u32| -> Result<Vec<u32>, TpmError> {
            let (data, _) = ctx
                .execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, 64))
                .map_err(TpmError::tpm(OP))?;
            match data {
                CapabilityData::Handles(list) => Ok(list
                    .into_inner()
                    .into_iter()
                    .map(u32::from)
                    .filter(|h| h >> 24 == first >> 24)
                    .collect()),
                _ => Err(TpmError::unexpected(OP, "not a handle list")),
            }
        };
        let transient_objects = list(0x8000_0000)?;
        let mut loaded_sessions = list(0x0200_0000)?;
        loaded_sessions.extend(list(0x0300_0000)?);
        let transient_avail = ctx
            .execute_without_session(|c| c.get_tpm_property(PropertyTag::HrTransientAvail))
            .map_err(TpmError::tpm(OP))?;
        let sessions_avail = ctx
            .execute_without_session(|c| c.get_tpm_property(PropertyTag::HrLoadedAvail))
            .map_err(TpmError::tpm(OP))?;
        Ok(LoadedHandles {
            transient_objects,
            loaded_sessions,
            transient_avail,
            sessions_avail,
        })
    }
}

/// Sorted, de-duplicated PCR indices; every index <= 23, at least one.
fn normalize_pcrs(op: &'static str, pcrs: &[u32]) -> Result<Vec<u32>, TpmError> {
    if pcrs.is_empty() {
        return Err(TpmError::invalid(op, "empty PCR selection"));
    }
    if let Some(bad) = pcrs.iter().find(|&&p| p > MAX_PCR) {
        return Err(TpmError::invalid(
            op,
            format!("PCR index {bad} (at most {MAX_PCR})"),
        ));
    }
    let mut v = pcrs.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn pcr_slot(op: &'static str, pcr: u32) -> Result<PcrSlot, TpmError> {
    PcrSlot::try_from(1u32 << pcr).map_err(|_| TpmError::invalid(op, format!("PCR index {pcr}")))
}

fn sha256_selection(op: &'static str, slots: &[u32]) -> Result<PcrSelectionList, TpmError> {
    let slots = slots
        .iter()
        .map(|&p| pcr_slot(op, p))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(TpmError::tpm(op))
}

/// SHA-256 bank PCR indices of a selection, ascending.
fn selected_sha256(list: &PcrSelectionList) -> Vec<u32> {
    let mut v: Vec<u32> = list
        .get_selections()
        .iter()
        .filter(|s| s.hashing_algorithm() == HashingAlgorithm::Sha256)
        .flat_map(|s| s.selected())
        .map(|slot| u32::from(slot).trailing_zeros())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// pcrDigest of a quote over the SHA-256 bank: SHA-256 of the concatenated
/// values in ascending PCR order.
fn pcr_digest(values: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut h = Sha256::new();
    for (_, v) in values {
        h.update(v);
    }
    h.finalize().to_vec()
}

fn read_sha256(s: &mut Scope<'_>, slots: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
    const OP: &str = "TPM2_PCR_Read";
    let selection = sha256_selection(OP, slots)?;
    // PCR_Read returns at most 8 digests per call; read_all loops.
    let data = s
        .execute_without_session(|c| tss_pcr::read_all(c, selection))
        .map_err(TpmError::tpm(OP))?;
    let bank = data
        .pcr_bank(HashingAlgorithm::Sha256)
        .ok_or_else(|| TpmError::unexpected(OP, "no sha256 bank in the answer"))?;
    slots
        .iter()
        .map(|&p| {
            let slot = pcr_slot(OP, p)?;
            bank.get_digest(slot)
                .map(|d| (p, d.value().to_vec()))
                .ok_or_else(|| TpmError::unexpected(OP, format!("no value for sha256 PCR {p}")))
        })
        .collect()
}

/// A policy session satisfying the EK's policy A: PolicySecret(TPM_RH_ENDORSEMENT).
/// Registered with the scope, so it is flushed afterwards.
fn endorsement_policy_session(
    s: &mut Scope<'_>,
    hash: HashingAlgorithm,
) -> Result<AuthSession, TpmError> {
    const OP: &str = "EK policy session";
    let session = s
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            hash,
        )
        .map_err(TpmError::tpm("TPM2_StartAuthSession(policy)"))?
        .ok_or_else(|| TpmError::unexpected(OP, "no session handle"))?;
    s.flush_later(SessionHandle::from(session));
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    s.tr_sess_set_attributes(session, attrs, mask)
        .map_err(TpmError::tpm("session attributes"))?;
    let policy = PolicySession::try_from(session)
        .map_err(|_| TpmError::unexpected(OP, "not a policy session"))?;
    s.execute_with_session(Some(AuthSession::Password), |c| {
        c.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })
    .map_err(TpmError::tpm("TPM2_PolicySecret(endorsement)"))?;
    Ok(session)
}

/// True if the TPM rejected the AK blobs themselves (a format-one error on a
/// parameter: integrity, binding, size, ...), i.e. they belong to another
/// TPM/EK. Memory, locality, lockout or transport errors are not that.
fn blob_rejected(e: &TpmError) -> bool {
    match e.response_code() {
        Some(rc) => rc >> 16 == 0 && rc & 0x80 != 0 && rc & 0x40 != 0,
        None => false,
    }
}

impl Keys {
    /// Loads the EK: its saved context, or CreatePrimary with the default
    /// template (then saves its context). Registered with the scope.
    fn load_ek(&mut self, s: &mut Scope<'_>) -> Result<KeyHandle, TpmError> {
        if let Some(saved) = self.ek_saved.take() {
            match s.context_load(saved.clone()) {
                Ok(h) => {
                    s.flush_later(h);
                    self.ek_saved = Some(saved);
                    return Ok(KeyHandle::from(h));
                }
                Err(e) => {
                    let e = TpmError::Tpm {
                        op: "TPM2_ContextLoad(EK)",
                        source: e,
                    };
                    if e.discards_context() {
                        // The context is unusable now: say why instead of
                        // failing on the next command. The saved context is
                        // dropped all the same (the EK is re-created), so
                        // that a saved context that cannot be loaded can
                        // never fail every attempt.
                        return Err(e);
                    }
                    debug!(error = %e, "saved EK context is no longer valid (TPM reset?)");
                }
            }
        }
        let ek = s
            .execute_without_session(|c| ek::create_ek_object_2(c, self.ek_alg.selection(), None))
            .map_err(TpmError::tpm("TPM2_CreatePrimary(EK)"))?;
        s.flush_later(ek);
        match s.context_save(ek.into()) {
            Ok(saved) => self.ek_saved = Some(saved),
            Err(e) => debug!(error = %e, "cannot save the EK context"),
        }
        Ok(ek)
    }

    /// Loads the AK: its saved context, or the stored blobs under the EK, or
    /// a new AK that is then stored. `ek`: the EK if the caller already loaded
    /// it. Everything loaded is registered with the scope.
    fn load_ak(&mut self, s: &mut Scope<'_>, ek: Option<KeyHandle>) -> Result<KeyHandle, TpmError> {
        if let Some(saved) = self.ak_saved.take() {
            match s.context_load(saved.clone()) {
                Ok(h) => {
                    s.flush_later(h);
                    self.ak_saved = Some(saved);
                    return Ok(KeyHandle::from(h));
                }
                Err(e) => {
                    let e = TpmError::Tpm {
                        op: "TPM2_ContextLoad(AK)",
                        source: e,
                    };
                    if e.discards_context() {
                        // as for the EK in `load_ek`
                        return Err(e);
                    }
                    debug!(error = %e, "saved AK context is no longer valid (TPM reset?)");
                }
            }
        }
        let ek = match ek {
            Some(ek) => ek,
            None => self.load_ek(s)?,
        };
        let ak = self.load_ak_under(s, ek)?;
        match s.context_save(ak.into()) {
            Ok(saved) => self.ak_saved = Some(saved),
            Err(e) => debug!(error = %e, "cannot save the AK context"),
        }
        Ok(ak)
    }

    fn load_ak_under(&mut self, s: &mut Scope<'_>, ek: KeyHandle) -> Result<KeyHandle, TpmError> {
        if self.ak_blobs.is_none() {
            self.ak_blobs = read_stored_ak(&self.state_dir, self.ak_alg)?;
        }
        if let Some(blobs) = self.ak_blobs.clone() {
            match s.execute_without_session(|c| {
                ak::load_ak(c, ek, None, blobs.private.clone(), blobs.public.clone())
            }) {
                Ok(h) => {
                    s.flush_later(h);
                    return Ok(h);
                }
                Err(source) => {
                    let e = TpmError::Tpm {
                        op: "TPM2_Load(AK)",
                        source,
                    };
                    if !blob_rejected(&e) {
                        return Err(e);
                    }
                    warn!(
                        state_dir = %self.state_dir.display(),
                        error = %e,
                        "the stored AK cannot be loaded by this TPM (TPM cleared or EK changed?): \
                         creating a NEW AK; the server will see a different AK and this host \
                         must be re-enrolled"
                    );
                    self.ak_blobs = None;
                }
            }
        }
        let (key_alg, scheme) = self.ak_alg.key_and_scheme();
        let created = s
            .execute_without_session(|c| {
                ak::create_ak_2(c, ek, HashingAlgorithm::Sha256, key_alg, scheme, None, None)
            })
            .map_err(TpmError::tpm("TPM2_Create(AK)"))?;
        let blobs = AkBlobs {
            public: created.out_public,
            private: created.out_private,
        };
        let public_bytes = blobs
            .public
            .marshall()
            .map_err(TpmError::tpm("marshal AK public"))?;
        state::store_ak_blobs(&self.state_dir, &public_bytes, blobs.private.value())?;
        info!(state_dir = %self.state_dir.display(), ak = %self.ak_alg, "created and stored a new AK");
        let h = s
            .execute_without_session(|c| {
                ak::load_ak(c, ek, None, blobs.private.clone(), blobs.public.clone())
            })
            .map_err(TpmError::tpm("TPM2_Load(AK)"))?;
        s.flush_later(h);
        self.ak_blobs = Some(blobs);
        Ok(h)
    }
}

/// The AK blobs from the state directory, if present, parseable and of the
/// configured algorithm (otherwise a warning, and `None`: a new AK is made).
fn read_stored_ak(state_dir: &Path, alg: AkAlg) -> Result<Option<AkBlobs>, TpmError> {
    let Some(state::StoredAk { public, private }) = state::load_ak_blobs(state_dir)? else {
        return Ok(None);
    };
    let public = match Public::unmarshall(&public) {
        Ok(p) => p,
        Err(e) => {
            warn!(state_dir = %state_dir.display(), error = %e, "stored ak.pub is not a TPMT_PUBLIC; creating a new AK");
            return Ok(None);
        }
    };
    if !alg.matches(&public) {
        warn!(state_dir = %state_dir.display(), configured = %alg, "stored AK has another algorithm than configured; creating a new AK");
        return Ok(None);
    }
    let private = match Private::try_from(private) {
        Ok(p) => p,
        Err(e) => {
            warn!(state_dir = %state_dir.display(), error = %e, "stored ak.priv is not a TPM2B_PRIVATE; creating a new AK");
            return Ok(None);
        }
    };
    Ok(Some(AkBlobs { public, private }))
}

/// The EK certificate from NV, `None` if the index is not defined.
fn read_ek_certificate(s: &mut Scope<'_>, alg: EkAlg) -> Result<Option<Vec<u8>>, TpmError> {
    const OP: &str = "read EK certificate (NV)";
    let index = NvIndexTpmHandle::new(alg.cert_nv_index()).map_err(TpmError::tpm(OP))?;
    let nv = match s.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(index))) {
        Ok(h) => h,
        Err(source) => {
            let e = TpmError::Tpm { op: OP, source };
            if e.is_tpm_rc(rc::HANDLE) {
                debug!(
                    index = format_args!("{:#x}", alg.cert_nv_index()),
                    "no EK certificate in NV"
                );
                return Ok(None);
            }
            return Err(e);
        }
    };
    s.close_later(nv);
    let nv_index = NvIndexHandle::from(nv);
    let (nv_public, _) = s
        .execute_without_session(|c| c.nv_read_public(nv_index))
        .map_err(TpmError::tpm("TPM2_NV_ReadPublic(EK certificate)"))?;
    let attrs = nv_public.attributes();
    let auth = if attrs.auth_read() {
        NvAuth::NvIndex(nv_index)
    } else if attrs.owner_read() {
        NvAuth::Owner
    } else {
        return Err(TpmError::unexpected(
            OP,
            "EK certificate index is neither AUTHREAD nor OWNERREAD",
        ));
    };
    let size = nv_public.data_size();
    let chunk_max = s
        .execute_without_session(|c| c.get_tpm_property(PropertyTag::NvBufferMax))
        .ok()
        .flatten()
        .map(|v| v as usize)
        .unwrap_or(MaxNvBuffer::MAX_SIZE)
        .clamp(1, MaxNvBuffer::MAX_SIZE);
    let mut cert = Vec::with_capacity(size);
    while cert.len() < size {
        let n = chunk_max.min(size - cert.len());
        let (Ok(n16), Ok(off16)) = (u16::try_from(n), u16::try_from(cert.len())) else {
            return Err(TpmError::unexpected(
                OP,
                format!("NV index of {size} bytes"),
            ));
        };
        let part = s
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_read(auth, nv_index, n16, off16)
            })
            .map_err(TpmError::tpm("TPM2_NV_Read(EK certificate)"))?;
        if part.value().is_empty() {
            return Err(TpmError::unexpected(OP, "NV read returned no data"));
        }
        cert.extend_from_slice(part.value());
    }
    // Some TPMs pad the index: keep exactly the DER SEQUENCE.
    if let Some(len) = der_len(&cert) {
        cert.truncate(len);
    }
    Ok(Some(cert))
}

/// Total length of a DER SEQUENCE at the start of `b`, if it fits in `b`.
fn der_len(b: &[u8]) -> Option<usize> {
    if b.len() < 2 || b[0] != 0x30 {
        return None;
    }
    let (hdr, len) = match b[1] {
        l if l < 0x80 => (2, l as usize),
        0x81 => (3, *b.get(2)? as usize),
        0x82 => (4, (*b.get(2)? as usize) << 8 | *b.get(3)? as usize),
        0x83 => (
            5,
            (*b.get(2)? as usize) << 16 | (*b.get(3)? as usize) << 8 | *b.get(4)? as usize,
        ),
        _ => return None,
    };
    let total = hdr + len;
    (total <= b.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selection_is_normalized_and_checked() {
        assert_eq!(
            normalize_pcrs("t", &[17, 0, 7, 17, 1]).unwrap(),
            vec![0, 1, 7, 17]
        );
        assert!(normalize_pcrs("t", &[]).is_err());
        let e = normalize_pcrs("t", &[24]).unwrap_err();
        assert!(e.to_string().contains("PCR index 24"), "{e}");
        let sel = sha256_selection("t", &[0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]).unwrap();
        assert_eq!(
            selected_sha256(&sel),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]
        );
    }

    #[test]
    fn pcr_digest_concatenates_in_order() {
        let v = vec![(0, vec![0u8; 32]), (17, vec![0xffu8; 32])];
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update([0xffu8; 32]);
        assert_eq!(pcr_digest(&v), h.finalize().to_vec());
    }

    #[test]
    fn der_length() {
        assert_eq!(der_len(&[0x30, 0x03, 1, 2, 3, 0, 0]), Some(5));
        assert_eq!(der_len(&[0x30, 0x82, 0x00, 0x02, 1, 2, 0xff]), Some(6));
        assert_eq!(der_len(&[0x30, 0x82, 0x10, 0x00]), None);
        assert_eq!(der_len(&[0x04, 0x01, 0]), None);
        assert_eq!(der_len(&[]), None);
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("rsa2048".parse::<EkAlg>().unwrap(), EkAlg::Rsa2048);
        assert_eq!("ECC-P384".parse::<EkAlg>().unwrap(), EkAlg::EccP384);
        assert_eq!("ecc-p256".parse::<EkAlg>().unwrap(), EkAlg::EccP256);
        assert!("dsa".parse::<EkAlg>().is_err());
        assert_eq!("rsassa-2048".parse::<AkAlg>().unwrap(), AkAlg::RsaSsa2048);
        assert_eq!("ecdsa-p256".parse::<AkAlg>().unwrap(), AkAlg::EcdsaP256);
        for a in [EkAlg::Rsa2048, EkAlg::EccP384, EkAlg::EccP256] {
            assert_eq!(a.to_string().parse::<EkAlg>().unwrap(), a);
        }
        for a in [AkAlg::RsaSsa2048, AkAlg::EcdsaP256] {
            assert_eq!(a.to_string().parse::<AkAlg>().unwrap(), a);
        }
        assert_eq!(EkAlg::default(), EkAlg::Rsa2048);
        assert_eq!(AkAlg::default(), AkAlg::RsaSsa2048);
        assert_eq!(EkAlg::EccP384.cert_nv_index(), 0x01c00016);
    }

    #[test]
    fn open_with_a_bad_tcti_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Tpm::open(
            "nonsense-tcti:foo",
            dir.path(),
            EkAlg::Rsa2048,
            AkAlg::RsaSsa2048,
        )
        .unwrap_err();
        assert!(matches!(e, TpmError::Open { .. }), "{e}");
    }

    /// A stand-in for an ESYS context: its generation, and whether a failed
    /// call left it mid-command (then every later call is BAD_SEQUENCE).
    struct FakeCtx {
        generation: u32,
        poisoned: bool,
    }

    fn tss_err(rc: u32) -> TpmError {
        TpmError::Tpm {
            op: "t",
            source: tss_esapi::Error::Tss2Error(
                tss_esapi::constants::response_code::Tss2ResponseCode::from(rc),
            ),
        }
    }

    const TCTI_IO: u32 = 0x000a_000a;
    const ESYS_BAD_SEQUENCE: u32 = 0x0007_0007;

    /// A TPM that may be away: opening fails then, and a call on an open
    /// context fails in the TCTI and poisons it, as tss-esapi does.
    struct FakeTpm {
        up: bool,
        opens: u32,
    }

    impl FakeTpm {
        fn open(&mut self) -> Result<FakeCtx, TpmError> {
            self.opens += 1;
            if !self.up {
                return Err(TpmError::Open {
                    tcti: "fake".into(),
                    source: tss_esapi::Error::Tss2Error(
                        tss_esapi::constants::response_code::Tss2ResponseCode::from(TCTI_IO),
                    ),
                });
            }
            Ok(FakeCtx {
                generation: self.opens,
                poisoned: false,
            })
        }

        fn call(&self, ctx: &mut FakeCtx) -> Result<u32, TpmError> {
            if ctx.poisoned {
                return Err(tss_err(ESYS_BAD_SEQUENCE));
            }
            if !self.up {
                ctx.poisoned = true;
                return Err(tss_err(TCTI_IO));
            }
            Ok(ctx.generation)
        }
    }

    fn run(conn: &mut Connection<FakeCtx>, tpm: &mut FakeTpm) -> Result<u32, TpmError> {
        let tpm = std::cell::RefCell::new(tpm);
        conn.run(
            "fake",
            || tpm.borrow_mut().open(),
            |ctx| tpm.borrow().call(ctx),
        )
    }

    #[test]
    fn a_lost_tpm_is_reopened_once_it_is_back() {
        let mut tpm = FakeTpm { up: true, opens: 0 };
        let mut conn = Connection::open(tpm.open().unwrap());
        assert_eq!(run(&mut conn, &mut tpm).unwrap(), 1);
        // The TPM goes away: the call fails in the TCTI, the context is
        // discarded, reopening fails too: no context is kept.
        tpm.up = false;
        let e = run(&mut conn, &mut tpm).unwrap_err();
        assert!(matches!(e, TpmError::Open { .. }), "{e}");
        assert!(!conn.is_open());
        assert_eq!(tpm.opens, 2);
        // Every later call tries to open again; never a stale context's BAD_SEQUENCE.
        let e = run(&mut conn, &mut tpm).unwrap_err();
        assert!(matches!(e, TpmError::Open { .. }), "{e}");
        assert_eq!(tpm.opens, 3);
        // The TPM is back: the next call opens a new context and succeeds.
        tpm.up = true;
        assert_eq!(run(&mut conn, &mut tpm).unwrap(), 4);
        assert!(conn.is_open());
        assert_eq!(run(&mut conn, &mut tpm).unwrap(), 4, "kept while it works");
    }

    #[test]
    fn a_context_that_died_while_idle_is_replaced_within_the_call() {
        let mut tpm = FakeTpm { up: true, opens: 0 };
        let mut conn = Connection::open(FakeCtx {
            generation: 0,
            poisoned: true,
        });
        assert_eq!(run(&mut conn, &mut tpm).unwrap(), 1);
        assert_eq!(tpm.opens, 1);
    }

    #[test]
    fn a_fresh_context_that_fails_is_discarded_without_a_loop() {
        let mut opens = 0;
        let mut conn: Connection<FakeCtx> = Connection { ctx: None };
        let e = conn
            .run(
                "fake",
                || {
                    opens += 1;
                    Ok(FakeCtx {
                        generation: opens,
                        poisoned: true,
                    })
                },
                |ctx| FakeTpm { up: true, opens: 0 }.call(ctx),
            )
            .unwrap_err();
        assert_eq!(e.response_code(), Some(ESYS_BAD_SEQUENCE));
        assert_eq!(opens, 1);
        assert!(!conn.is_open());
    }

    #[test]
    fn a_tpm_answer_keeps_the_context() {
        let mut opens = 0;
        let mut conn = Connection::open(FakeCtx {
            generation: 0,
            poisoned: false,
        });
        for rc in [0x1df, 0x902] {
            let e = conn
                .run(
                    "fake",
                    || {
                        opens += 1;
                        Err(TpmError::invalid("t", "must not open"))
                    },
                    |_| -> Result<(), TpmError> { Err(tss_err(rc)) },
                )
                .unwrap_err();
            assert_eq!(e.response_code(), Some(rc));
            assert!(conn.is_open());
        }
        assert_eq!(opens, 0);
    }

    #[test]
    fn blob_rejection_classification() {
        let mk = |rc: u32| TpmError::Tpm {
            op: "t",
            source: tss_esapi::Error::Tss2Error(
                tss_esapi::constants::response_code::Tss2ResponseCode::from(rc),
            ),
        };
        assert!(blob_rejected(&mk(0x1df))); // integrity, parameter 1
        assert!(!blob_rejected(&mk(0x902))); // object memory
        assert!(!blob_rejected(&mk(0x000a_000a))); // TCTI I/O
        assert!(mk(0x000a_000a).is_transport());
        assert!(mk(0x1df).is_tpm_rc(rc::INTEGRITY));
    }
}
