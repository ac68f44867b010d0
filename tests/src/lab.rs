//! A whole local lab in one directory: a test PKI (the agents' CA, which
//! also issues the server's certificate, and the operators' CA), an swtpm EK CA, swtpm
//! hosts with EK certificates and (simulated) TXT measured launches, the
//! pool policy written from the golden values, the server and the agents.
//! Shared by the integration tests and the `trustpool-lab` command.

use crate::pki::{CertFiles, TestCa};
use crate::procs::{AgentOptions, ServerOptions, ServerProcess};
use crate::swtpm::{simulated_launch_log, EkCa, Swtpm, SwtpmState};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trustpool_evidence::pcr::{drtm_hash_start, extend};
use trustpool_proto::v1::EventLogKind;

/// The SINIT ACM of the golden build (its bytes stand for the real module).
pub const GOLDEN_SINIT: &[u8] = b"trustpool-lab golden SINIT ACM 2026-11";
/// A SINIT that is not in the policy.
pub const ROGUE_SINIT: &[u8] = b"trustpool-lab unknown SINIT ACM";
/// Names of the MLE measurements of the golden build (tboot).
pub const GOLDEN_MLE: &[&str] = &["tboot-1.11.1"];
/// Names of the launched modules of the golden build (kernel, initrd).
pub const GOLDEN_MODULES: &[&str] = &["vmlinuz-6.1.0-28-amd64", "initrd.img-6.1.0-28-amd64"];

/// Where, below a host's root, the TXT (DRTM) event log of its launch is:
/// the Linux Secure Launch (TrenchBoot) securityfs node, which the agent
/// reads by default (`<root>/sys/kernel/security/slaunch/eventlog`).
pub const SLAUNCH_EVENTLOG: &str = "sys/kernel/security/slaunch/eventlog";

/// What the host's hardening checks see (`--root` of its agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardening {
    /// The machine the lab runs on (`--root /`).
    Live,
    /// A fixture tree of a well-hardened compute node (AppArmor, sVirt, KVM…).
    GoodCompute,
    /// The same node with AppArmor disabled.
    AppArmorDisabled,
}

/// How a lab host boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// TXT measured launch of the golden SINIT, MLE and modules.
    Golden,
    /// TXT measured launch of a SINIT the policy does not know.
    Rogue,
    /// No measured launch: PCR 17-19 stay all-FF.
    None,
    /// The locality-4 hash start of the golden SINIT and nothing else (no
    /// MLE or module measured): PCR 17 is the golden value, PCR 18-19 all
    /// zeros. Not a measured launch.
    HashStartOnly,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Digests of the MLE and module measurements of the golden build.
pub fn golden_measurements() -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    (
        GOLDEN_MLE.iter().map(|m| sha256(m.as_bytes())).collect(),
        GOLDEN_MODULES
            .iter()
            .map(|m| sha256(m.as_bytes()))
            .collect(),
    )
}

/// PCR values (sha256) a host has after `launch` on a fresh swtpm, following
/// the layout of [`Swtpm::simulate_measured_launch`]: PCR 17 = SINIT hash
/// start, PCR 18 = MLE digests, PCR 19 = module digests. PCR 0-7 stay zero
/// (swtpm has no firmware that measures).
pub fn expected_pcrs(launch: Launch) -> BTreeMap<u8, [u8; 32]> {
    let mut pcrs: BTreeMap<u8, [u8; 32]> = (0..8).map(|i| (i, [0u8; 32])).collect();
    let (mle, modules) = golden_measurements();
    let sinit = match launch {
        Launch::Golden => Some(GOLDEN_SINIT),
        Launch::Rogue => Some(ROGUE_SINIT),
        Launch::None => None,
        Launch::HashStartOnly => {
            pcrs.insert(17, drtm_hash_start(GOLDEN_SINIT));
            pcrs.insert(18, [0u8; 32]);
            pcrs.insert(19, [0u8; 32]);
            return pcrs;
        }
    };
    match sinit {
        None => {
            for i in 17..=19 {
                pcrs.insert(i, [0xff; 32]);
            }
        }
        Some(sinit) => {
            pcrs.insert(17, drtm_hash_start(sinit));
            pcrs.insert(18, mle.iter().fold([0u8; 32], |acc, d| extend(&acc, d)));
            pcrs.insert(19, modules.iter().fold([0u8; 32], |acc, d| extend(&acc, d)));
        }
    }
    pcrs
}

/// The hardening checks the lab's `default` pool requires.
pub const LAB_REQUIRED_CHECKS: &[&str] = &[
    "mac.enforcing_any",
    "svirt.guests_confined",
    "libvirt.qemu_nonroot",
];

/// The `default` pool by events, as `trustpool policy capture --events`
/// writes it from a host that booted `firmware` (an OVMF capture) and the
/// golden launch: every event of the firmware's log (PCRs 0-7) and of the
/// launch's TXT log (PCRs 17-19) allowed by digest, and `checks` required.
pub fn measured_boot_policy(firmware: &str, checks: &[&str]) -> anyhow::Result<String> {
    use trustpool_evidence::eventlog::measured::{measure, LogFacts};
    let log = crate::firmware::ovmf_log(firmware)?;
    let replayed = trustpool_evidence::eventlog::replay::replay(
        &trustpool_evidence::eventlog::parse(&log).context("the firmware log")?,
    )
    .context("replaying the firmware log")?;
    let bank = replayed
        .bank(trustpool_evidence::eventlog::Alg::Sha256)
        .context("the firmware log has no sha256 bank")?;
    let mut quoted = expected_pcrs(Launch::Golden);
    for i in 0..8u8 {
        let v: [u8; 32] = bank
            .value(i)
            .and_then(|v| v.try_into().ok())
            .context("a sha256 PCR")?;
        quoted.insert(i, v);
    }
    let LogFacts::Replayed(m) = measure(&log, &quoted) else {
        anyhow::bail!("the firmware log {firmware} does not replay");
    };
    let (mle, modules) = golden_measurements();
    let launch_log = crate::swtpm::simulated_launch_log(GOLDEN_SINIT, &mle, &modules);
    let LogFacts::Replayed(txt) =
        trustpool_evidence::eventlog::txt::measure_txt(&launch_log, &quoted)
    else {
        anyhow::bail!("the golden launch's TXT log does not replay");
    };
    let rules = trustpool_cli::eventpolicy::capture_events_toml(
        &format!("a host booted with {firmware}"),
        0,
        0,
        &m,
        Some(&txt),
        &quoted,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let required: Vec<String> = checks.iter().map(|c| format!("\"{c}\"")).collect();
    Ok(format!(
        "# Pool 'default': hosts whose firmware measured the golden events ({firmware}) and\n\
         # that went through the golden TXT measured launch.\n\
         require_measured_launch = true\n\
         pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]\n\
         require_checks = [{}]\n\n{rules}",
        required.join(", ")
    ))
}

/// The `default` pool policy admitting the golden build only.
pub fn golden_policy() -> String {
    policy_with_checks(&[])
}

/// The golden policy that also requires `checks` to pass.
pub fn policy_with_checks(checks: &[&str]) -> String {
    let required: Vec<String> = checks.iter().map(|c| format!("\"{c}\"")).collect();
    let mut text = format!(
        "# Pool 'default': hosts that went through the golden TXT measured launch.\n\
         require_measured_launch = true\n\
         pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]\n\
         require_checks = [{}]\n\n\
         [[allow]]\n\
         name = \"golden-2026-11\"\n\
         pcrs = {{ ",
        required.join(", ")
    );
    let entries: Vec<String> = expected_pcrs(Launch::Golden)
        .iter()
        .map(|(i, v)| format!("{i} = \"{}\"", hex::encode(v)))
        .collect();
    let _ = writeln!(text, "{} }}", entries.join(", "));
    text
}

/// The lab's fixed parts: PKI, EK CA, EK roots and policy directories.
pub struct Lab {
    /// Lab directory.
    pub dir: PathBuf,
    /// CA for the server and agent certificates.
    pub ca: TestCa,
    /// PEM of that CA on disk.
    pub ca_pem: PathBuf,
    /// The operators' own CA (the server's `--operator-ca`).
    pub operator_ca: TestCa,
    /// PEM of the operator CA on disk.
    pub operator_ca_pem: PathBuf,
    /// Server certificate and key.
    pub server_certs: CertFiles,
    /// The swtpm local CA that signs EK certificates.
    pub ek_ca: EkCa,
    /// Directory given to `--ek-roots`.
    pub ek_roots: PathBuf,
    /// Directory given to `--policy-dir`.
    pub policy_dir: PathBuf,
}

/// One simulated compute host: its swtpm and its agent's files.
pub struct LabHost {
    /// Host name.
    pub name: String,
    /// Its running swtpm.
    pub swtpm: Swtpm,
    /// Its TPM state.
    pub tpm_state: SwtpmState,
    /// Its client certificate.
    pub certs: CertFiles,
    /// Its agent state directory.
    pub state_dir: PathBuf,
    /// Root of the host view its hardening checks read (`None` = `/`).
    pub root: Option<PathBuf>,
    /// The TXT event log of its launch ([`simulated_launch_log`] of what
    /// the launch extended), for a host with one (not [`Launch::None`]):
    /// `<root>/`[`SLAUNCH_EVENTLOG`] when the host has a root, where its
    /// agent reads it by default; `<host dir>/slaunch-eventlog` for a
    /// [`Hardening::Live`] host, whose agent does not read it (it reads
    /// [`LabHost::event_log_file`], absent unless a test writes it).
    pub txt_log: Option<PathBuf>,
    /// The host's own directory in the lab.
    pub dir: PathBuf,
}

impl LabHost {
    /// The file its agent reads as the `kind` event log (absent unless a
    /// test writes it; the agent then sends "unavailable"): the default
    /// securityfs path inside a fixture root, a file of the host's directory
    /// on a host without one — never the log of the machine the lab runs on.
    pub fn event_log_file(&self, kind: EventLogKind) -> PathBuf {
        let (default, file) = match kind {
            EventLogKind::Txt => (trustpool_agent::config::DEFAULT_TXT_EVENT_LOG, "txt"),
            _ => (trustpool_agent::config::DEFAULT_UEFI_EVENT_LOG, "uefi"),
        };
        match &self.root {
            Some(root) => trustpool_agent::eventlog::under_root(root, Path::new(default)),
            None => self.dir.join("event-logs").join(file),
        }
    }

    /// The `--uefi-event-log` or `--txt-event-log` that makes its agent read
    /// [`LabHost::event_log_file`] (`None`: the default does, under its root).
    fn event_log_flag(&self, kind: EventLogKind) -> Option<PathBuf> {
        self.root.is_none().then(|| self.event_log_file(kind))
    }
}

impl Lab {
    /// Creates the PKI, the EK CA and the directories under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = TestCa::new("trustpool lab CA")?;
        let ca_pem = ca.write_cert(&dir.join("ca.pem"))?;
        let server_certs = ca.issue_server(&dir.join("server"))?;
        let operator_ca = TestCa::new("trustpool lab operator CA")?;
        let operator_ca_pem = operator_ca.write_cert(&dir.join("operator-ca.pem"))?;
        let ek_ca = EkCa::create(&dir.join("ek-ca"))?;
        let ek_roots = dir.join("ek-roots");
        std::fs::create_dir_all(&ek_roots)?;
        std::fs::copy(ek_ca.root_cert_pem_path(), ek_roots.join("swtpm-root.pem"))
            .context("copying the EK root certificate")?;
        std::fs::copy(
            ek_ca.intermediate_cert_pem_path(),
            ek_roots.join("swtpm-intermediate.pem"),
        )
        .context("copying the EK intermediate certificate")?;
        let policy_dir = dir.join("policy");
        std::fs::create_dir_all(&policy_dir)?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            ca,
            ca_pem,
            operator_ca,
            operator_ca_pem,
            server_certs,
            ek_ca,
            ek_roots,
            policy_dir,
        })
    }

    /// An operator's client certificate from the operator CA, SAN `name`,
    /// in `<dir>/operator/<name>.pem` and `.key`.
    pub fn issue_operator(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.operator_ca
            .issue_client(&self.dir.join("operator"), name)
    }

    /// Writes `<pool>.toml` into the policy directory.
    pub fn write_policy(&self, pool: &str, text: &str) -> anyhow::Result<()> {
        std::fs::write(self.policy_dir.join(format!("{pool}.toml")), text)
            .context("writing a policy")
    }

    /// Provisions an swtpm with EK certificates, starts it, performs `launch`,
    /// writes the TXT event log of the launch ([`LabHost::txt_log`]) and
    /// issues the host's client certificate.
    pub fn add_host(&self, name: &str, launch: Launch) -> anyhow::Result<LabHost> {
        self.add_host_with(name, launch, Hardening::Live)
    }

    /// Like [`Lab::add_host`], with the hardening view of the host's agent.
    pub fn add_host_with(
        &self,
        name: &str,
        launch: Launch,
        hardening: Hardening,
    ) -> anyhow::Result<LabHost> {
        let host_dir = self.dir.join("hosts").join(name);
        let tpm_state = SwtpmState::provision(&host_dir.join("tpm"), Some(&self.ek_ca))?;
        let swtpm = Swtpm::start(&tpm_state)?;
        let (mle, modules) = golden_measurements();
        match launch {
            Launch::Golden => swtpm.simulate_measured_launch(GOLDEN_SINIT, &mle, &modules)?,
            Launch::Rogue => swtpm.simulate_measured_launch(ROGUE_SINIT, &mle, &modules)?,
            Launch::None => {}
            Launch::HashStartOnly => swtpm.txt_hash_start(GOLDEN_SINIT)?,
        }
        let certs = self.ca.issue_client(&host_dir.join("certs"), name)?;
        let state_dir = host_dir.join("agent");
        std::fs::create_dir_all(&state_dir)?;
        let root = match hardening {
            Hardening::Live => None,
            Hardening::GoodCompute | Hardening::AppArmorDisabled => {
                let root = host_dir.join("root");
                let built = if hardening == Hardening::GoodCompute {
                    trustpool_hardening::fixture::good_compute_host(&root)
                } else {
                    trustpool_hardening::fixture::apparmor_disabled_host(&root)
                };
                built.map_err(|e| anyhow::anyhow!("building the fixture host of {name}: {e}"))?;
                Some(root)
            }
        };
        let log = match launch {
            Launch::Golden => Some(simulated_launch_log(GOLDEN_SINIT, &mle, &modules)),
            Launch::Rogue => Some(simulated_launch_log(ROGUE_SINIT, &mle, &modules)),
            Launch::HashStartOnly => Some(simulated_launch_log(GOLDEN_SINIT, &[], &[])),
            Launch::None => None,
        };
        let txt_log = match log {
            None => None,
            Some(bytes) => {
                let path = match &root {
                    Some(root) => root.join(SLAUNCH_EVENTLOG),
                    None => host_dir.join("slaunch-eventlog"),
                };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing the TXT event log {}", path.display()))?;
                Some(path)
            }
        };
        Ok(LabHost {
            name: name.to_string(),
            swtpm,
            tpm_state,
            certs,
            state_dir,
            root,
            txt_log,
            dir: host_dir,
        })
    }

    /// Like [`Lab::add_host_with`], on a host whose firmware booted: the
    /// real OVMF capture `firmware` (evidence/testdata/eventlog/ovmf/) is
    /// extended into its swtpm and its log written where the agent reads
    /// it under its `--root`, so the host sends a genuine firmware log that
    /// replays to its quotes. Needs a fixture `hardening` (a root).
    pub fn add_host_booted(
        &self,
        name: &str,
        launch: Launch,
        hardening: Hardening,
        firmware: &str,
    ) -> anyhow::Result<LabHost> {
        let host = self.add_host_with(name, launch, hardening)?;
        let Some(root) = &host.root else {
            anyhow::bail!("{name}: a booted lab host needs a fixture root for its event log");
        };
        let log = crate::firmware::ovmf_log(firmware)?;
        crate::firmware::boot(&host.swtpm, &log)
            .with_context(|| format!("booting {firmware} on {name}"))?;
        crate::firmware::install_log(root, &log)?;
        Ok(host)
    }

    /// Server options over this lab's files.
    pub fn server_options(&self, report_interval: &str, down_time: &str) -> ServerOptions {
        ServerOptions {
            dir: self.dir.join("server"),
            ca: self.ca_pem.clone(),
            cert: self.server_certs.cert.clone(),
            key: self.server_certs.key.clone(),
            policy_dir: self.policy_dir.clone(),
            ek_roots: self.ek_roots.clone(),
            report_interval: report_interval.into(),
            down_time: down_time.into(),
            publication: Default::default(),
            operators: Vec::new(),
            operator_ca: Some(self.operator_ca_pem.clone()),
            crls: Vec::new(),
            admin_socket: None,
            db: None,
            db_url: None,
        }
    }

    /// Agent options for `host` talking to `server`.
    pub fn agent_options(&self, host: &LabHost, server: &ServerProcess) -> AgentOptions {
        AgentOptions {
            server: server.url(),
            ca: self.ca_pem.clone(),
            cert: host.certs.cert.clone(),
            key: host.certs.key.clone(),
            tcti: host.swtpm.tcti(),
            hostname: host.name.clone(),
            state_dir: host.state_dir.clone(),
            root: host.root.clone(),
            watch_interval: None,
            uefi_event_log: host.event_log_flag(EventLogKind::Uefi),
            txt_event_log: host.event_log_flag(EventLogKind::Txt),
            extra_args: Vec::new(),
        }
    }
}
