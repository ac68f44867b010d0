//! swtpm lab harness: TPM 2.0 simulators for simulated compute hosts.
//!
//! * [`EkCa`]: a `swtpm_localca` certificate authority in a directory (root CA
//!   and intermediate "swtpm-localca"), configured through private config
//!   files (no /etc or /var involved), shared by several hosts.
//! * [`SwtpmState`]: a manufactured TPM state directory (`swtpm_setup`), with
//!   EK certificates (RSA-2048 at NV 0x01c00002, ECC P-384 at 0x01c00016) and
//!   a platform certificate, or a plain one without EK certificates.
//! * [`Swtpm`]: a running `swtpm socket` on free TCP ports (data P, control
//!   P+1, both on 127.0.0.1), killed and reaped on drop.
//! * TXT/DRTM simulation: [`Swtpm::txt_hash_start`], [`Swtpm::extend_pcr`],
//!   [`Swtpm::simulate_measured_launch`], with pure expectations in
//!   [`expected_launch_pcrs`] and the TXT event log of exactly what it
//!   extended in [`simulated_launch_log`]; [`Swtpm::read_pcrs`] reads the
//!   result back.
//!
//! Pure `std::process` + `std::net`; safe to use from concurrently running
//! tests. swtpm serves ONE data connection at a time: while a TPM context
//! (e.g. an agent `Tpm`) is open on [`Swtpm::tcti`], another client (tpm2-tools,
//! [`Swtpm::extend_pcr`]) blocks until the first one disconnects. The control
//! channel ([`Swtpm::txt_hash_start`], locality) is independent of it.

use crate::ports::{self, START_ATTEMPTS};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// swtpm control channel commands (swtpm's `tpm_ioctl.h`, big-endian u32).
const CMD_SHUTDOWN: u32 = 3;
const CMD_SET_LOCALITY: u32 = 5;

/// How long to wait for swtpm to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} (is it installed?)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::canonicalize(dir).with_context(|| format!("canonicalize {}", dir.display()))
}

/// A `swtpm_localca` EK CA living in `dir`: the CA state (root key and
/// certificate, intermediate signing key `signkey.pem` and certificate
/// `issuercert.pem`, serial) plus the config files `swtpm_setup.conf`,
/// `swtpm-localca.conf` and `swtpm-localca.options` that point `swtpm_setup`
/// to it. Any number of hosts may be provisioned with it, also concurrently
/// (`swtpm_localca` locks its state directory).
#[derive(Debug, Clone)]
pub struct EkCa {
    pub dir: PathBuf,
}

impl EkCa {
    /// Creates the CA in `dir` (created if missing). `swtpm_localca` creates
    /// its root and intermediate lazily on first use, so this provisions a
    /// throwaway TPM state once (~1.5 s): afterwards both PEM files exist.
    pub fn create(dir: &Path) -> Result<EkCa> {
        let dir = absolute(dir)?;
        let d = dir.display();
        fs::write(
            dir.join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\n\
                 create_certs_tool_config = {d}/swtpm-localca.conf\n\
                 create_certs_tool_options = {d}/swtpm-localca.options\n\
                 active_pcr_banks = sha256\n"
            ),
        )?;
        fs::write(
            dir.join("swtpm-localca.conf"),
            format!(
                "statedir = {d}\n\
                 signingkey = {d}/signkey.pem\n\
                 issuercert = {d}/issuercert.pem\n\
                 certserial = {d}/certserial\n"
            ),
        )?;
        fs::write(
            dir.join("swtpm-localca.options"),
            "--platform-manufacturer trustpool --platform-version 2.1 --platform-model QEMU\n",
        )?;
        let ca = EkCa { dir };
        let throwaway = tempfile::Builder::new()
            .prefix("ekca-init")
            .tempdir_in(&ca.dir)?;
        SwtpmState::provision(throwaway.path(), Some(&ca))
            .context("provisioning the throwaway TPM that makes swtpm_localca create its CA")?;
        for p in [ca.root_cert_pem_path(), ca.intermediate_cert_pem_path()] {
            if !p.exists() {
                bail!("swtpm_localca did not create {}", p.display());
            }
        }
        Ok(ca)
    }

    /// The self-signed root CA certificate (`swtpm-localca-rootca-cert.pem`).
    pub fn root_cert_pem_path(&self) -> PathBuf {
        self.dir.join("swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate CA certificate that signs EK certificates (`issuercert.pem`).
    pub fn intermediate_cert_pem_path(&self) -> PathBuf {
        self.dir.join("issuercert.pem")
    }

    fn setup_conf(&self) -> PathBuf {
        self.dir.join("swtpm_setup.conf")
    }
}

/// A manufactured swtpm TPM 2.0 state directory (only the SHA-256 PCR bank
/// is active).
#[derive(Debug, Clone)]
pub struct SwtpmState {
    pub dir: PathBuf,
}

impl SwtpmState {
    /// Runs `swtpm_setup --tpm2` into `dir` (created if missing; an existing
    /// state is overwritten). With a CA: persistent SRK 0x81000001, RSA-2048
    /// EK 0x81010001 with certificate in NV 0x01c00002, ECC P-384 EK
    /// 0x81010016 with certificate in NV 0x01c00016, platform certificate in
    /// NV 0x01c08000, NV locked (`--lock-nvram`). Without a CA: an empty TPM
    /// (no EKs, no certificates) with the SHA-256 bank.
    pub fn provision(dir: &Path, ca: Option<&EkCa>) -> Result<SwtpmState> {
        let dir = absolute(dir)?;
        let mut cmd = Command::new("swtpm_setup");
        cmd.arg("--tpm2").arg("--tpmstate").arg(&dir).args([
            "--overwrite",
            "--pcr-banks",
            "sha256",
        ]);
        // keep the config file alive until swtpm_setup is done
        let _plain_conf;
        match ca {
            Some(ca) => {
                cmd.args([
                    "--create-ek-cert",
                    "--create-platform-cert",
                    "--create-spk",
                    "--lock-nvram",
                ])
                .arg("--config")
                .arg(ca.setup_conf());
            }
            None => {
                let mut f = tempfile::NamedTempFile::new()?;
                f.write_all(b"active_pcr_banks = sha256\n")?;
                cmd.arg("--config").arg(f.path());
                _plain_conf = f;
            }
        }
        run(&mut cmd, "swtpm_setup")?;
        Ok(SwtpmState { dir })
    }
}

/// A running `swtpm socket --tpm2` on 127.0.0.1 (data port `port`, control
/// port `ctrl_port` = `port + 1`, as the tpm2-tss swtpm TCTI requires), with
/// `--flags not-need-init,startup-clear` (ready for commands, TPM2_Startup
/// done). Stopped (control-channel shutdown, else SIGKILL) and reaped on
/// drop: no process is left behind.
#[derive(Debug)]
pub struct Swtpm {
    pub port: u16,
    pub ctrl_port: u16,
    state_dir: PathBuf,
    child: Option<Child>,
}

impl Swtpm {
    /// Starts swtpm on `state` on a free port pair and waits until it accepts
    /// connections. Retries with other ports if one was taken meanwhile.
    pub fn start(state: &SwtpmState) -> Result<Swtpm> {
        let (port, child) = spawn_on_free_pair(&state.dir)?;
        Ok(Swtpm {
            port,
            ctrl_port: port + 1,
            state_dir: state.dir.clone(),
            child: Some(child),
        })
    }

    /// The tpm2-tss TCTI string: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The state directory this swtpm runs on.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// True while the swtpm process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops swtpm: control-channel CMD_SHUTDOWN (graceful; swtpm exits),
    /// SIGKILL if it has not exited after 3 s; always reaps the process.
    /// Idempotent. Open TPM connections break.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = ctrl_command(self.ctrl_port, CMD_SHUTDOWN, &[]);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        ports::release_pair(self.port);
    }

    /// Kills swtpm with SIGKILL, as a crash or `kill -9` would (open TPM
    /// connections break at once, the volatile state is lost), and reaps it.
    /// Its ports stay reserved for [`Swtpm::start_again`]. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes swtpm (SIGSTOP): connections stay open and commands are
    /// accepted but never answered, as with a wedged TPM or vTPM back end.
    /// [`Swtpm::resume`] lets it go on; stopping or dropping it works while
    /// frozen.
    pub fn pause(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a [`Swtpm::pause`]d swtpm go on (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("swtpm on port {} is not running", self.port))?;
        let pid = i32::try_from(child.id()).context("swtpm pid")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to swtpm"))
    }

    /// Starts swtpm again on the same state and the same ports after
    /// [`Swtpm::kill`] or [`Swtpm::stop`]: the TPM is back where its clients
    /// look for it (a TPM Reset: PCRs at their reset values, keys and NV
    /// kept). An error if the ports stay taken (retried for about 4 s).
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("swtpm on port {} is still running", self.port);
        }
        ports::reserve_pair(self.port);
        let mut last_err = anyhow!("no attempt made");
        for _ in 0..40 {
            match spawn_on(&self.state_dir, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last_err.context(format!("swtpm did not start again on port {}", self.port)))
    }

    /// Stops and starts swtpm again on the same state: a host reboot (PCRs
    /// back to their reset values, resetCount + 1, keys and NV kept). Tries
    /// to keep the same ports; if they were taken meanwhile, other ports are
    /// used: call [`Swtpm::tcti`] again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let port = self.port;
        for _ in 0..20 {
            if ports::reserve_pair(port) {
                match spawn_on(&self.state_dir, port) {
                    Ok(child) => {
                        self.child = Some(child);
                        return Ok(());
                    }
                    Err(_) => ports::release_pair(port),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (port, child) = spawn_on_free_pair(&self.state_dir)?;
        self.port = port;
        self.ctrl_port = port + 1;
        self.child = Some(child);
        Ok(())
    }

    /// TXT-style dynamic launch start: `swtpm_ioctl --tcp 127.0.0.1:CTRL -h -`
    /// with `data` on stdin runs TPM_HASH_START/DATA/END at locality 4:
    /// PCR17 := SHA-256(0^32 || SHA-256(data)) and PCRs 18-22 := 0 (from
    /// their all-FF reset value). See [`drtm_hash_start`].
    pub fn txt_hash_start(&self, data: &[u8]) -> Result<()> {
        let mut child = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.ctrl_port))
            .args(["-h", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run swtpm_ioctl")?;
        {
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("swtpm_ioctl stdin"))?;
            stdin.write_all(data)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "swtpm_ioctl -h failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Sets the locality of the following data-channel commands (swtpm
    /// control command CMD_SET_LOCALITY). A new TCTI connection resets it to 0.
    pub fn set_locality(&self, locality: u8) -> Result<()> {
        ctrl_command(self.ctrl_port, CMD_SET_LOCALITY, &[locality])
    }

    /// Extends the SHA-256 bank of `pcr` with `digest`: PCRs 17-22 at
    /// locality 2 (where the PC Client profile allows the DRTM PCRs to be
    /// extended), the others at locality 0. Opens (and closes) its own TPM
    /// connection: no other client may be connected at the same time.
    pub fn extend_pcr(&self, pcr: u8, digest: [u8; 32]) -> Result<()> {
        let locality = if (17..=22).contains(&pcr) { 2 } else { 0 };
        self.extend_pcr_at_locality(pcr, digest, locality)
    }

    /// Like [`Swtpm::extend_pcr`] at an explicit locality; returns the TPM's
    /// error (e.g. TPM_RC_LOCALITY) if the extend is not allowed there.
    /// Locality is set back to 0 afterwards in any case.
    pub fn extend_pcr_at_locality(&self, pcr: u8, digest: [u8; 32], locality: u8) -> Result<()> {
        use tss_esapi::{
            handles::PcrHandle,
            interface_types::{algorithm::HashingAlgorithm, session_handles::AuthSession},
            structures::{Digest, DigestValues},
            tcti_ldr::TctiNameConf,
            tss2_esys::ESYS_TR_PCR0,
        };
        if pcr > 23 {
            bail!("PCR {pcr} does not exist");
        }
        let handle = PcrHandle::try_from(ESYS_TR_PCR0 + u32::from(pcr))?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, Digest::try_from(digest.to_vec())?);
        let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&self.tcti())?)
            .context("open a TPM context on swtpm")?;
        self.set_locality(locality)?;
        let res = ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.pcr_extend(handle, values)
        });
        let reset = self.set_locality(0);
        drop(ctx);
        res.with_context(|| format!("PCR_Extend({pcr}) at locality {locality}"))?;
        reset
    }

    /// A tboot-like measured launch on this (freshly started) TPM, with this
    /// simple layout:
    ///
    /// 1. `txt_hash_start(sinit)`: PCR17 = SHA-256(0^32 || SHA-256(sinit)),
    ///    PCRs 18-22 = 0 (what the CPU and the SINIT ACM do at GETSEC[SENTER]);
    ///    PCR17 gets nothing else (the SINIT "details" measurement);
    /// 2. PCR18 extended with each MLE digest, in order (the MLE = tboot and
    ///    what it measures first, as in tboot's legacy PCR mapping);
    /// 3. PCR19 extended with each module digest, in order (kernel, initrd,
    ///    ... as named by tboot's launch policy).
    ///
    /// Steps 2 and 3 run at locality 2. [`expected_launch_pcrs`] computes the
    /// resulting values, [`simulated_launch_log`] the TXT event log of these
    /// extends. Then PCRs 17-19 are read back and must be the expected
    /// values: swtpm 0.7.1 has been seen to drop a hash sequence silently
    /// while another client used the TPM, so a launch that did not take is
    /// an error here rather than a wrong PCR later. Opens its own TPM
    /// connections (see [`Swtpm::extend_pcr`]).
    pub fn simulate_measured_launch(
        &self,
        sinit: &[u8],
        mle: &[[u8; 32]],
        modules: &[[u8; 32]],
    ) -> Result<()> {
        self.txt_hash_start(sinit)?;
        for d in mle {
            self.extend_pcr(18, *d)?;
        }
        for d in modules {
            self.extend_pcr(19, *d)?;
        }
        let read = self.read_pcrs(&[17, 18, 19])?;
        for (pcr, want) in expected_launch_pcrs(sinit, mle, modules) {
            let got = u8::try_from(pcr).ok().and_then(|p| read.get(&p));
            if got != Some(&want) {
                bail!(
                    "the simulated launch did not take: sha256 PCR {pcr} is {}, expected {}",
                    got.map(hex::encode).unwrap_or_else(|| "unread".into()),
                    hex::encode(want)
                );
            }
        }
        Ok(())
    }

    /// Reads sha256 PCR values (TPM2_PCR_Read, as often as needed: it
    /// answers at most 8 per call). Opens and closes its own TPM
    /// connection, like [`Swtpm::extend_pcr`].
    pub fn read_pcrs(&self, pcrs: &[u8]) -> Result<BTreeMap<u8, [u8; 32]>> {
        use tss_esapi::{
            abstraction::pcr::read_all,
            interface_types::algorithm::HashingAlgorithm,
            structures::{PcrSelectionListBuilder, PcrSlot},
            tcti_ldr::TctiNameConf,
        };
        let slot = |p: u8| -> Result<PcrSlot> {
            if p > 23 {
                bail!("PCR {p} does not exist");
            }
            PcrSlot::try_from(1u32 << p).with_context(|| format!("PCR {p}"))
        };
        let slots: Vec<PcrSlot> = pcrs.iter().map(|p| slot(*p)).collect::<Result<_>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()?;
        let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&self.tcti())?)
            .context("open a TPM context on swtpm")?;
        let data = ctx
            .execute_without_session(|c| read_all(c, selection))
            .context("TPM2_PCR_Read")?;
        drop(ctx);
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| anyhow!("TPM2_PCR_Read: no sha256 bank in the answer"))?;
        let mut out = BTreeMap::new();
        for &p in pcrs {
            let digest = bank
                .get_digest(slot(p)?)
                .ok_or_else(|| anyhow!("TPM2_PCR_Read: no value for sha256 PCR {p}"))?;
            let value: [u8; 32] = digest
                .value()
                .try_into()
                .map_err(|_| anyhow!("sha256 PCR {p}: not 32 bytes"))?;
            out.insert(p, value);
        }
        Ok(out)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_on_free_pair(state_dir: &Path) -> Result<(u16, Child)> {
    let mut last_err = anyhow!("no attempt made");
    for _ in 0..START_ATTEMPTS {
        let port = ports::free_port_pair();
        match spawn_on(state_dir, port) {
            Ok(child) => return Ok((port, child)),
            Err(e) => {
                ports::release_pair(port);
                last_err = e;
            }
        }
    }
    Err(last_err.context(format!(
        "swtpm did not start after {START_ATTEMPTS} attempts"
    )))
}

/// Starts swtpm on `port`/`port+1` and waits until both ports accept
/// connections from it (and it is still alive shortly after: a swtpm that
/// failed to bind exits at once).
fn spawn_on(state_dir: &Path, port: u16) -> Result<Child> {
    let log_path = state_dir.join("swtpm.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut child = Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state_dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot run swtpm (is the swtpm package installed?)")?;
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    loop {
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("swtpm on port {port} exited ({status}): {tail}");
        }
        let ready = TcpStream::connect_timeout(&addr(port + 1), Duration::from_millis(200)).is_ok()
            && TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok();
        if ready {
            // a swtpm that lost the race for a port exits right away; the
            // listener we reached might belong to someone else then
            std::thread::sleep(Duration::from_millis(30));
            if child.try_wait()?.is_none() {
                return Ok(child);
            }
            continue;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("swtpm on port {port} did not accept connections within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a control-channel command (u32 BE code + payload) and checks the
/// 4-byte result code.
fn ctrl_command(ctrl_port: u16, cmd: u32, payload: &[u8]) -> Result<()> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, ctrl_port))
        .with_context(|| format!("connect to swtpm control port {ctrl_port}"))?;
    // swtpm serves its data and control channels from one thread: on a
    // loaded machine an answer can take seconds.
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut msg = cmd.to_be_bytes().to_vec();
    msg.extend_from_slice(payload);
    s.write_all(&msg)?;
    let mut res = [0u8; 4];
    s.read_exact(&mut res)
        .with_context(|| format!("swtpm control command {cmd}: no answer"))?;
    let code = u32::from_be_bytes(res);
    if code != 0 {
        bail!("swtpm control command {cmd} failed with {code:#x}");
    }
    Ok(())
}

/// PCR arithmetic of the evidence crate (`extend(old, d)` = SHA-256(old || d);
/// `drtm_hash_start(data)` = PCR17 after `swtpm_ioctl -h data` =
/// SHA-256(0^32 || SHA-256(data))), re-exported so that the expectations of
/// this harness are exactly what the verifier computes.
pub use trustpool_evidence::pcr::{drtm_hash_start, extend};

/// Expected SHA-256 PCR 17, 18, 19 after
/// [`Swtpm::simulate_measured_launch`]`(sinit, mle, modules)` on a freshly
/// started TPM.
pub fn expected_launch_pcrs(
    sinit: &[u8],
    mle: &[[u8; 32]],
    modules: &[[u8; 32]],
) -> [(u32, [u8; 32]); 3] {
    let pcr17 = drtm_hash_start(sinit);
    let pcr18 = mle.iter().fold([0u8; 32], |p, d| extend(&p, d));
    let pcr19 = modules.iter().fold([0u8; 32], |p, d| extend(&p, d));
    [(17, pcr17), (18, pcr18), (19, pcr19)]
}

/// The TXT (DRTM) event log of [`Swtpm::simulate_measured_launch`]`(sinit,
/// mle, modules)`: exactly the extends it makes, in the crypto-agile format
/// the SINIT ACM and tboot write (Spec ID Event03 header, then
/// `TCG_PCR_EVENT2` records; docs/eventlog.md, "TXT/DRTM log"):
///
/// 1. PCR 17, `EVTYPE_HASH_START`, digest SHA-256(sinit): the hash the
///    locality-4 sequence extends into the zeroed PCR 17, so replaying it
///    from zero gives [`drtm_hash_start`]`(sinit)`;
/// 2. PCR 18, one `EVTYPE_MLE_HASH` per MLE digest, in order;
/// 3. PCR 19, one tboot `EVTTYPE_TB_MEASUREMENT` per module digest, in
///    order.
///
/// Only the sha256 bank: the lab's TPMs have no other ([`SwtpmState`]
/// allocates sha256 alone, so `swtpm_ioctl -h` hashes into it alone and
/// [`Swtpm::extend_pcr`] extends it alone), and the quote covers it. A log
/// claiming a sha1 bank would need digests nobody extended. The events
/// carry no data, as tboot's carry none.
pub fn simulated_launch_log(sinit: &[u8], mle: &[[u8; 32]], modules: &[[u8; 32]]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    use trustpool_evidence::eventlog::{encode::LogBuilder, Alg, EventType};
    let sha256 = |d: &[u8]| vec![(Alg::Sha256.id(), d.to_vec())];
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event_digests(
        17,
        EventType::EVTYPE_HASH_START,
        &sha256(&Sha256::digest(sinit)),
        &[],
    );
    for d in mle {
        b.event_digests(18, EventType::EVTYPE_MLE_HASH, &sha256(d), &[]);
    }
    for d in modules {
        b.event_digests(19, EventType::EVTTYPE_TB_MEASUREMENT, &sha256(d), &[]);
    }
    b.finish()
}

/// SHA-256 PCR values right after TPM2_Startup(CLEAR) without a dynamic
/// launch: 0..=16 and 23 all-zero, 17..=22 all-FF.
pub fn reset_value(pcr: u32) -> [u8; 32] {
    if (17..=22).contains(&pcr) {
        [0xff; 32]
    } else {
        [0; 32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_start_matches_measured_value() {
        // TPM-NOTES §5: swtpm_ioctl -h hello, sha256 bank
        assert_eq!(
            hex::encode(drtm_hash_start(b"hello")),
            "9851312028952521510e8eaab5be94e7dc24b5fc292b2e9781173cf11ffa9878"
        );
    }

    /// The simulated launch's log replays, from the DRTM start, to exactly
    /// the PCRs the launch leaves (pure: no swtpm).
    #[test]
    fn simulated_launch_log_replays_to_the_expected_pcrs() {
        use trustpool_evidence::eventlog::txt::measure_txt;
        let sinit = b"a SINIT ACM";
        let mle = [[0xa1; 32]];
        let modules = [[0xb1; 32], [0xb2; 32]];
        let log = simulated_launch_log(sinit, &mle, &modules);
        let quoted: BTreeMap<u8, [u8; 32]> = expected_launch_pcrs(sinit, &mle, &modules)
            .into_iter()
            .map(|(p, v)| (p as u8, v))
            .collect();
        let facts = measure_txt(&log, &quoted);
        let m = facts.replayed().expect("replayed");
        assert_eq!(m.replayed, vec![17, 18, 19]);
        assert!(m.mismatches.is_empty(), "{:?}", m.mismatches);
        assert_eq!(m.events.len(), 4);
        assert_eq!(m.events[0].pcr, 17);
        assert_eq!(
            m.events[0].event_type,
            trustpool_evidence::eventlog::EventType::EVTYPE_HASH_START
        );
        // PCRs 20-22 are zero after the launch and the log leaves them so.
        let mut with_zeros = quoted.clone();
        with_zeros.extend((20..=22).map(|p| (p, [0u8; 32])));
        let m = measure_txt(&log, &with_zeros);
        assert_eq!(m.replayed().map(|m| m.replayed.len()), Some(6));
        // Each other launch is a mismatch.
        let other = expected_launch_pcrs(b"another SINIT", &mle, &modules);
        let quoted: BTreeMap<u8, [u8; 32]> = other.into_iter().map(|(p, v)| (p as u8, v)).collect();
        let m = measure_txt(&log, &quoted);
        let bad: Vec<u8> = m
            .replayed()
            .expect("replayed")
            .mismatches
            .iter()
            .map(|x| x.pcr)
            .collect();
        assert_eq!(bad, vec![17]);
        // Without MLE or modules: the hash start alone.
        let log = simulated_launch_log(sinit, &[], &[]);
        let quoted: BTreeMap<u8, [u8; 32]> = expected_launch_pcrs(sinit, &[], &[])
            .into_iter()
            .map(|(p, v)| (p as u8, v))
            .collect();
        let m = measure_txt(&log, &quoted);
        assert_eq!(
            m.replayed().map(|m| m.replayed.clone()),
            Some(vec![17, 18, 19])
        );
    }

    #[test]
    fn launch_expectation_without_components() {
        let [(_, p17), (_, p18), (_, p19)] = expected_launch_pcrs(b"x", &[], &[]);
        assert_eq!(p17, drtm_hash_start(b"x"));
        assert_eq!(p18, [0; 32]);
        assert_eq!(p19, [0; 32]);
    }
}
