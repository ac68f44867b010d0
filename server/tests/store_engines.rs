//! The store suite: the same cases, run against every engine the store
//! supports — an SQLite file, a real PostgreSQL server and a real MariaDB
//! server, each started by the test in a temporary directory (see
//! `trustpool_tests::dbserver`). One test per engine runs every case, each
//! on a database of its own, so that a server is started once per engine.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use trustpool_evidence::reason::Reason;
use trustpool_server::store::{
    DbLocation, Engine, Enrolment, EvidenceCommit, FactsChange, HistoryEvent, LogDomain, LogRow,
    PendingEnrolment, Revocation, Store, StoredClock, StoredFacts, StoredVerdict,
};
use trustpool_tests::dbserver::{DbServer, Engine as DbEngine};

/// Where a case gets its databases.
struct Backend {
    /// None for SQLite.
    server: Option<DbServer>,
    dir: tempfile::TempDir,
    next: std::sync::atomic::AtomicU32,
}

impl Backend {
    fn sqlite() -> Backend {
        Backend {
            server: None,
            dir: tempfile::tempdir().expect("tempdir"),
            next: Default::default(),
        }
    }

    fn server(engine: DbEngine) -> Backend {
        Backend {
            server: Some(DbServer::start(engine).expect("database server")),
            dir: tempfile::tempdir().expect("tempdir"),
            next: Default::default(),
        }
    }

    /// A new, empty database.
    fn fresh(&self) -> DbLocation {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = match &self.server {
            None => return DbLocation::Sqlite(self.dir.path().join(format!("case{n}.db"))),
            Some(server) => server
                .fresh_database(&format!("case{n}"))
                .expect("fresh database"),
        };
        url.parse().expect("database URL")
    }

    fn engine(&self) -> Engine {
        match &self.server {
            None => Engine::Sqlite,
            Some(s) if s.engine() == DbEngine::Postgres => Engine::Postgres,
            Some(_) => Engine::MySql,
        }
    }
}

/// The URL sqlx takes for a location (to shape a database behind the store's back).
fn raw_url(location: &DbLocation) -> String {
    match location {
        DbLocation::Sqlite(p) => format!("sqlite://{}", p.display()),
        DbLocation::Postgres(u) | DbLocation::MySql(u) => u.clone(),
    }
}

/// Runs one statement on `location` outside the store.
async fn raw(location: &DbLocation, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&raw_url(location))
        .await
        .expect("raw connection");
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

type Case = for<'a> fn(&'a Backend) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |b| Box::pin($name(b)))),*];
    };
}

cases![
    a_large_batch_is_stored_as_if_written_record_by_record,
    state_survives_reopening,
    a_second_enrolment_never_overwrites_the_first,
    an_approval_moves_a_tpm_and_a_readmission_forgets_what_was_sent_while_revoked,
    history_reads_back_in_order_within_its_limits,
    values_keep_their_size_case_and_bytes,
    a_closed_store_gives_errors_not_panics,
    reopening_migrates_nothing_and_a_newer_schema_is_refused,
    servers_starting_at_once_on_an_empty_database_agree_on_its_id,
    a_database_of_another_store_fails_the_probe_closed,
    a_store_copies_into_another_engine,
    every_change_is_listed_with_its_hosts_and_its_writer,
    a_lease_has_one_holder_until_it_expires,
    replicas_see_each_other_and_their_policy_digests,
    only_an_existing_store_is_a_source,
];

async fn run_suite(backend: Backend) {
    for (name, case) in CASES {
        eprintln!("store suite on {:?}: {name}", backend.engine());
        case(&backend).await;
    }
}

#[tokio::test]
async fn the_store_suite_passes_on_sqlite() {
    run_suite(Backend::sqlite()).await;
}

#[tokio::test]
async fn the_store_suite_passes_on_postgresql() {
    run_suite(Backend::server(DbEngine::Postgres)).await;
}

#[tokio::test]
async fn the_store_suite_passes_on_mariadb() {
    run_suite(Backend::server(DbEngine::MariaDb)).await;
}

fn enrolment(host: &str) -> Enrolment {
    Enrolment {
        hostname: host.into(),
        ek_public: vec![1, 2, 3],
        ek_certificate: Some(vec![4]),
        ak_public: vec![5, 6],
        ak_name: vec![0, 11, 7],
        cert_fingerprint: "ab".into(),
        cert_subject: format!("CN={host}"),
        enrolled_at_ms: 42,
    }
}

fn verdict(host: &str, pool: &str, trusted: bool, at: i64) -> StoredVerdict {
    StoredVerdict {
        hostname: host.into(),
        pool: pool.into(),
        trusted,
        attested_at_ms: at,
        valid_until_ms: at + 75_000,
        reasons: if trusted {
            vec![]
        } else {
            vec![Reason::new("pcr.not_allowed", "PCR 17")]
        },
        policy_digest: "d".into(),
    }
}

/// Facts `body` with a row for the UEFI log `sha` (its facts `log`).
fn with_log(body: &str, sha: &str, log: &str) -> StoredFacts {
    StoredFacts {
        body: body.to_string(),
        logs: vec![LogRow {
            domain: LogDomain::Uefi,
            log_sha256: sha.to_string(),
            body: log.to_string(),
        }],
    }
}

fn clock(c: u64) -> StoredClock {
    StoredClock {
        reset_count: 1,
        restart_count: 2,
        clock: c,
    }
}

fn event(host: &str, kind: &str, at_ms: i64) -> HistoryEvent {
    HistoryEvent {
        at_ms,
        hostname: host.into(),
        pool: String::new(),
        event: kind.into(),
        trusted: false,
        policy_digest: String::new(),
        reasons: vec![],
        actor: "op".into(),
    }
}

/// A batch larger than one multi-row statement, with hosts that appear
/// twice: the store holds what writing the records in order would leave,
/// every chunk of every table included.
async fn a_large_batch_is_stored_as_if_written_record_by_record(b: &Backend) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    let n = 512 * 2 + 7;
    let names: Vec<String> = (0..n).map(|i| format!("h{i:05}")).collect();
    let first: Vec<Vec<StoredVerdict>> = names
        .iter()
        .map(|h| vec![verdict(h, "default", true, 1), verdict(h, "gold", false, 1)])
        .collect();
    // Every host's facts carry the row of its UEFI log.
    let bodies: Vec<StoredFacts> = names
        .iter()
        .map(|h| {
            with_log(
                &format!("{{\"host\":\"{h}\"}}"),
                &format!("sha-{h}"),
                &format!("{{\"log\":\"{h}\"}}"),
            )
        })
        .collect();
    // Later, h00002's facts change but its log does not: a body alone.
    let h2_later = StoredFacts::body_only("{\"host\":\"h00002\",\"later\":1}");
    let mut batch: Vec<EvidenceCommit<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, h)| EvidenceCommit {
            hostname: h,
            verdicts: &first[i],
            facts: FactsChange::Put(&bodies[i]),
            clock: Some(clock(10)),
        })
        .collect();
    // Later in the same batch: h00000 fails and its facts are withdrawn;
    // h00001 keeps its facts and gets a newer clock.
    let later = vec![verdict(&names[0], "default", false, 2)];
    batch.push(EvidenceCommit {
        hostname: &names[0],
        verdicts: &later,
        facts: FactsChange::Withdraw,
        clock: None,
    });
    batch.push(EvidenceCommit {
        hostname: &names[1],
        verdicts: &[],
        facts: FactsChange::Keep,
        clock: Some(clock(20)),
    });
    batch.push(EvidenceCommit {
        hostname: &names[2],
        verdicts: &[],
        facts: FactsChange::Put(&h2_later),
        clock: None,
    });
    store
        .commit_evidence_batch(&batch)
        .await
        .expect("committed");

    let verdicts = store.verdicts().await.expect("verdicts");
    assert_eq!(verdicts.len(), 2 * n);
    let of = |h: &str, pool: &str| {
        verdicts
            .iter()
            .find(|v| v.hostname == h && v.pool == pool)
            .cloned()
            .expect("stored")
    };
    assert_eq!(of(&names[0], "default"), later[0]);
    assert_eq!(of(&names[0], "gold"), first[0][1]);
    assert_eq!(of(&names[n - 1], "default"), first[n - 1][0]);
    assert_eq!(of(&names[n - 1], "gold").reasons, first[n - 1][1].reasons);
    let facts: HashMap<String, StoredFacts> =
        store.facts().await.expect("facts").into_iter().collect();
    assert_eq!(facts.len(), n - 1, "h00000's facts are withdrawn");
    assert!(!facts.contains_key(&names[0]));
    assert_eq!(facts[&names[1]], bodies[1]);
    assert_eq!(facts[&names[n - 1]], bodies[n - 1]);
    // A body written alone keeps the log row the store had.
    assert_eq!(facts[&names[2]].body, h2_later.body);
    assert_eq!(facts[&names[2]].logs, bodies[2].logs);
    // h00000's log row went with its facts: new facts without a row of
    // their own do not find it again.
    store
        .put_facts(&names[0], &StoredFacts::body_only("{}"))
        .await
        .expect("facts");
    let again: HashMap<String, StoredFacts> =
        store.facts().await.expect("facts").into_iter().collect();
    assert!(again[&names[0]].logs.is_empty(), "{:?}", again[&names[0]]);
    let clocks: HashMap<String, StoredClock> =
        store.clocks().await.expect("clocks").into_iter().collect();
    assert_eq!(clocks.len(), n);
    assert_eq!(clocks[&names[1]].clock, 20);
    assert_eq!(clocks[&names[0]].clock, 10);
    store.close().await;
}

async fn state_survives_reopening(b: &Backend) {
    let location = b.fresh();
    let store = Store::connect(&location, false).await.expect("open");
    let id = store.store_id().to_string();
    store
        .insert_enrolment(&enrolment("host-a"))
        .await
        .expect("insert");
    let v = verdict("host-a", "default", false, 1);
    store
        .put_verdicts(std::slice::from_ref(&v))
        .await
        .expect("verdicts");
    store
        .put_clock(
            "host-a",
            StoredClock {
                reset_count: 3,
                restart_count: 4,
                clock: u64::from(u32::MAX) + 5,
            },
        )
        .await
        .expect("clock");
    let facts = with_log("{\"a\":1}", "ab12", "{\"status\":\"replayed\"}");
    store.put_facts("host-a", &facts).await.expect("facts");
    store.close().await;
    let store = Store::connect(&location, false).await.expect("reopen");
    assert_eq!(store.store_id(), id);
    assert_eq!(
        store.enrolments().await.expect("read"),
        vec![enrolment("host-a")]
    );
    assert_eq!(store.verdicts().await.expect("read"), vec![v]);
    let clocks = store.clocks().await.expect("read");
    assert_eq!(clocks[0].1.reset_count, 3);
    assert_eq!(clocks[0].1.clock, u64::from(u32::MAX) + 5);
    assert_eq!(
        store.facts().await.expect("read"),
        vec![("host-a".to_string(), facts)]
    );
    let history = store.history("host-a", 0, 10).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event, "enrolled");
    assert!(store.probe().await.is_ok());
    store.close().await;
}

async fn a_second_enrolment_never_overwrites_the_first(b: &Backend) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    store
        .insert_enrolment(&enrolment("host-a"))
        .await
        .expect("insert");
    let mut other = enrolment("host-a");
    other.ek_public = vec![9];
    let err = store.insert_enrolment(&other).await.expect_err("conflict");
    assert!(
        format!("{err:#}").contains("storing the enrolment of host-a"),
        "{err:#}"
    );
    assert!(
        !trustpool_server::store::is_store_fault(&err),
        "a conflict is not a database fault: {err:#}"
    );
    assert!(store.health().ok());
    assert_eq!(
        store.enrolments().await.expect("read")[0].ek_public,
        vec![1, 2, 3]
    );
    // The failed enrolment left no history event behind.
    assert_eq!(
        store.history("host-a", 0, 10).await.expect("history").len(),
        1
    );
    store.close().await;
}

async fn an_approval_moves_a_tpm_and_a_readmission_forgets_what_was_sent_while_revoked(
    b: &Backend,
) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    store
        .insert_enrolment(&enrolment("old-name"))
        .await
        .expect("insert");
    store
        .put_verdicts(&[verdict("old-name", "default", true, 1)])
        .await
        .expect("verdict");
    store.put_clock("old-name", clock(7)).await.expect("clock");
    // The same TPM comes back under a new name and waits for approval.
    let pending = PendingEnrolment {
        enrolment: enrolment("new-name"),
        reason: "the EK is enrolled for old-name".into(),
    };
    store.put_pending(&pending).await.expect("pending");
    store
        .put_pending(&pending)
        .await
        .expect("pending again replaces");
    assert_eq!(store.pending().await.expect("pending"), vec![pending]);
    let (approved, moved) = store
        .approve("new-name", &event("new-name", "approved", 2))
        .await
        .expect("approve");
    assert_eq!(approved, enrolment("new-name"));
    assert_eq!(moved, vec!["old-name".to_string()]);
    assert_eq!(
        store.enrolments().await.expect("read"),
        vec![enrolment("new-name")]
    );
    assert!(store.verdicts().await.expect("read").is_empty());
    assert!(store.clocks().await.expect("read").is_empty());
    assert!(store.pending().await.expect("read").is_empty());
    assert!(store
        .approve("nobody", &event("nobody", "approved", 3))
        .await
        .is_err());

    // Revoked, then readmitted: verdicts and facts of the revoked time go.
    let revocation = Revocation {
        hostname: "new-name".into(),
        revoked_by: "op".into(),
        revoked_at_ms: 5,
        comment: "stolen".into(),
    };
    store
        .set_revocation(
            "new-name",
            Some(&revocation),
            &event("new-name", "revoked", 5),
        )
        .await
        .expect("revoke");
    assert_eq!(store.revocations().await.expect("read"), vec![revocation]);
    store
        .put_verdicts(&[verdict("new-name", "default", false, 6)])
        .await
        .expect("verdict");
    store
        .put_facts("new-name", &with_log("{}", "ab", "{}"))
        .await
        .expect("facts");
    store
        .set_revocation("new-name", None, &event("new-name", "readmitted", 7))
        .await
        .expect("readmit");
    assert!(store.revocations().await.expect("read").is_empty());
    assert!(store.verdicts().await.expect("read").is_empty());
    assert!(store.facts().await.expect("read").is_empty());
    store
        .put_facts("new-name", &StoredFacts::body_only("{}"))
        .await
        .expect("facts");
    assert!(
        store.facts().await.expect("read")[0].1.logs.is_empty(),
        "the log row went with the readmission"
    );
    let kinds: Vec<String> = store
        .history("new-name", 0, 10)
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, ["approved", "revoked", "readmitted"]);
    store.close().await;
}

async fn history_reads_back_in_order_within_its_limits(b: &Backend) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    let mut events = Vec::new();
    for i in 0..20 {
        let mut e = event("h", "verdict", 100 + i);
        e.pool = "default".into();
        e.trusted = i % 2 == 0;
        e.reasons = vec![Reason::new("r.c", format!("n{i}"))];
        events.push(e);
    }
    // Two events in the same millisecond keep their order of insertion.
    let mut same = event("h", "verdict", 119);
    same.pool = "default".into();
    same.trusted = true;
    events.push(same);
    events.push(event("", "policy_reload", 110));
    events.push(event("other", "verdict", 150));
    store.append_history(&events).await.expect("append");
    let newest = store.history("h", 0, 5).await.expect("history");
    assert_eq!(newest.len(), 5);
    assert_eq!(newest.last().expect("one").at_ms, 119);
    assert!(
        newest.last().expect("one").trusted,
        "the later of the two at 119"
    );
    assert!(newest.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let since = store.history("h", 110, 100).await.expect("history");
    assert_eq!(
        since.len(),
        12,
        "110..=119, the second 119 and the server-wide event"
    );
    assert!(since.iter().any(|e| e.hostname.is_empty()));
    assert!(since.iter().all(|e| e.hostname != "other"));
    assert_eq!(since[0].reasons, vec![Reason::new("r.c", "n10")]);
    let until = store.history_until("h", 105).await.expect("until");
    assert_eq!(until.first().expect("newest first").at_ms, 105);
    assert_eq!(until.len(), 6);
    assert_eq!(
        store
            .last_recorded_trust("h", "default")
            .await
            .expect("last"),
        Some(true)
    );
    assert_eq!(
        store.last_recorded_trust("h", "gold").await.expect("last"),
        None
    );
    store.close().await;
}

async fn values_keep_their_size_case_and_bytes(b: &Backend) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    // Host names differ by case only: two hosts, as in DNS-unaware SQLite.
    let mut lower = enrolment("host-a");
    lower.ek_public = (0..=255).collect();
    lower.ek_certificate = None;
    let mut upper = enrolment("HOST-A");
    upper.ek_public = vec![0; 4096];
    store.insert_enrolment(&lower).await.expect("lower");
    store.insert_enrolment(&upper).await.expect("upper");
    let mut got = store.enrolments().await.expect("read");
    got.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    assert_eq!(got, vec![upper, lower]);
    // Facts larger than MariaDB's TEXT (64 KiB), with non-ASCII text.
    let big = format!("{{\"k\":\"{}é\"}}", "x".repeat(300_000));
    let big = with_log(&big, &"a".repeat(64), &big);
    store.put_facts("host-a", &big).await.expect("big facts");
    assert_eq!(store.facts().await.expect("read")[0].1, big);
    store.close().await;
}

async fn a_closed_store_gives_errors_not_panics(b: &Backend) {
    let store = Store::connect(&b.fresh(), false).await.expect("open");
    store.close().await;
    assert!(store.probe().await.is_err());
    assert!(!store.health().ok());
    assert!(store.put_verdicts(&[]).await.is_err());
    assert!(store.enrolments().await.is_err());
    assert!(store.insert_enrolment(&enrolment("h")).await.is_err());
}

async fn reopening_migrates_nothing_and_a_newer_schema_is_refused(b: &Backend) {
    let location = b.fresh();
    let store = Store::connect(&location, false).await.expect("open");
    let id = store.store_id().to_string();
    store.close().await;
    let again = Store::connect(&location, false).await.expect("reopen");
    assert_eq!(again.store_id(), id);
    again.close().await;
    let next = trustpool_server::store::schema::latest() + 1;
    raw(
        &location,
        &format!(
            "INSERT INTO schema_version (version, name, applied_at_ms) VALUES ({next}, 'from the future', 0)"
        ),
    )
    .await;
    let err = Store::connect(&location, false)
        .await
        .err()
        .expect("a newer schema is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("newer than this server"), "{msg}");
}

async fn servers_starting_at_once_on_an_empty_database_agree_on_its_id(b: &Backend) {
    if b.engine() == Engine::Sqlite {
        // One server per SQLite file: nothing to agree on.
        return;
    }
    let location = b.fresh();
    let opened = futures_join3(
        Store::connect(&location, false),
        Store::connect(&location, false),
        Store::connect(&location, false),
    )
    .await;
    let stores: Vec<Store> = opened
        .into_iter()
        .map(|r| r.expect("every replica opens"))
        .collect();
    assert!(stores
        .windows(2)
        .all(|w| w[0].store_id() == w[1].store_id()));
    for s in &stores {
        assert!(s.probe().await.is_ok(), "every replica's probe passes");
        s.close().await;
    }
}

async fn futures_join3<T>(
    a: impl Future<Output = T>,
    b: impl Future<Output = T>,
    c: impl Future<Output = T>,
) -> Vec<T> {
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}

async fn a_database_of_another_store_fails_the_probe_closed(b: &Backend) {
    if b.engine() == Engine::Sqlite {
        // The SQLite file's identity has its own tests (store::db).
        return;
    }
    let location = b.fresh();
    let store = Store::connect(&location, false).await.expect("open");
    assert!(store.probe().await.is_ok());
    raw(
        &location,
        "UPDATE store_identity SET store_id = 'another-store' WHERE id = 1",
    )
    .await;
    let why = store.probe().await.expect_err("another store");
    assert!(why.contains("no longer holds store"), "{why}");
    assert!(store.health().identity_lost());
    assert!(store.insert_enrolment(&enrolment("h")).await.is_err());
    store.close().await;
}

async fn a_store_copies_into_another_engine(b: &Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let from = Store::open(&dir.path().join("source.db"))
        .await
        .expect("source");
    from.insert_enrolment(&enrolment("host-a"))
        .await
        .expect("enrol");
    from.put_pending(&PendingEnrolment {
        enrolment: enrolment("host-b"),
        reason: "why".into(),
    })
    .await
    .expect("pending");
    from.put_verdicts(&[verdict("host-a", "default", true, 9)])
        .await
        .expect("verdict");
    from.put_clock("host-a", clock(3)).await.expect("clock");
    from.put_facts("host-a", &with_log("{}", "ab", "{\"l\":1}"))
        .await
        .expect("facts");
    let revocation = Revocation {
        hostname: "host-c".into(),
        revoked_by: "op".into(),
        revoked_at_ms: 1,
        comment: String::new(),
    };
    from.set_revocation("host-c", Some(&revocation), &event("host-c", "revoked", 1))
        .await
        .expect("revoke");
    let history: Vec<HistoryEvent> = (0..6000)
        .map(|i| event("host-a", "verdict", 10 + i))
        .collect();
    from.append_history(&history).await.expect("history");

    let location = b.fresh();
    let to = Store::connect(&location, false).await.expect("destination");
    let copied = from.copy_into(&to).await.expect("copied");
    assert!(copied.contains(&("history", 6002)), "{copied:?}");
    assert!(copied.contains(&("event_logs", 1)), "{copied:?}");
    to.close().await;
    let to = Store::connect(&location, false).await.expect("reopened");
    assert_eq!(to.store_id(), from.store_id(), "the copy is the same store");
    assert_eq!(
        to.enrolments().await.expect("read"),
        from.enrolments().await.expect("read")
    );
    assert_eq!(
        to.pending().await.expect("read"),
        from.pending().await.expect("read")
    );
    assert_eq!(
        to.verdicts().await.expect("read"),
        from.verdicts().await.expect("read")
    );
    assert_eq!(
        to.clocks().await.expect("read"),
        from.clocks().await.expect("read")
    );
    assert_eq!(
        to.facts().await.expect("read"),
        from.facts().await.expect("read")
    );
    assert_eq!(to.revocations().await.expect("read"), vec![revocation]);
    assert_eq!(
        to.history("host-a", 0, 10_000).await.expect("read"),
        from.history("host-a", 0, 10_000).await.expect("read")
    );
    assert!(to.probe().await.is_ok());
    // A destination that holds a store already is refused.
    let err = from.copy_into(&to).await.expect_err("not empty");
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
    to.close().await;
    from.close().await;
}

/// What one replica commits, another finds in the change table and reads
/// back whole.
async fn every_change_is_listed_with_its_hosts_and_its_writer(b: &Backend) {
    let location = b.fresh();
    let a = Store::connect(&location, false).await.expect("open");
    a.set_replica("replica-a/1");
    let other = Store::connect(&location, false)
        .await
        .expect("second handle");
    let start = other.last_change().await.expect("newest change");
    a.insert_enrolment(&enrolment("host-a"))
        .await
        .expect("enrol");
    let v = verdict("host-a", "default", true, 7);
    let w = verdict("host-b", "default", false, 7);
    a.commit_evidence_batch(&[
        EvidenceCommit {
            hostname: "host-a",
            verdicts: std::slice::from_ref(&v),
            facts: FactsChange::Put(&with_log("{\"f\":1}", "ab", "{\"l\":2}")),
            clock: Some(clock(9)),
        },
        EvidenceCommit {
            hostname: "host-b",
            verdicts: std::slice::from_ref(&w),
            facts: FactsChange::Keep,
            clock: None,
        },
    ])
    .await
    .expect("evidence");
    let listed = other.change_seqs_after(start, 100).await.expect("places");
    assert!(listed.iter().all(|(_, writer)| writer == "replica-a/1"));
    let seqs: Vec<i64> = listed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs.len(), 2, "one change per transaction: {seqs:?}");
    assert!(seqs[0] > start && seqs[1] > seqs[0]);
    let changes = other.changes_at(&seqs).await.expect("changes");
    assert_eq!(changes[0].hosts, vec!["host-a".to_string()]);
    assert_eq!(
        changes[1].hosts,
        vec!["host-a".to_string(), "host-b".to_string()]
    );
    assert!(changes.iter().all(|c| c.replica == "replica-a/1"));
    assert!(changes[1].stamp >= changes[0].stamp && changes[0].stamp > 1_600_000_000_000_000);
    assert!(other
        .change_seqs_after(seqs[1], 100)
        .await
        .expect("places")
        .is_empty());
    let hosts = other
        .stored_hosts(&["host-a".to_string(), "host-gone".to_string()])
        .await
        .expect("hosts");
    assert_eq!(hosts.len(), 2);
    let host_a = hosts
        .iter()
        .find(|h| h.hostname == "host-a")
        .expect("host-a");
    assert_eq!(host_a.enrolment, Some(enrolment("host-a")));
    assert_eq!(host_a.verdicts, vec![v]);
    assert_eq!(host_a.facts, Some(with_log("{\"f\":1}", "ab", "{\"l\":2}")));
    assert_eq!(host_a.clock, Some(clock(9)));
    let gone = hosts
        .iter()
        .find(|h| h.hostname == "host-gone")
        .expect("asked for");
    assert!(gone.enrolment.is_none() && gone.verdicts.is_empty() && gone.facts.is_none());
    // The holder of the lease prunes what every replica has read.
    assert_eq!(
        a.prune_changes(i64::MAX).await.expect("prune"),
        2 + u64::try_from(seqs.len().saturating_sub(2)).expect("n")
    );
    assert!(other
        .change_seqs_after(start, 100)
        .await
        .expect("places")
        .is_empty());
    a.close().await;
    other.close().await;
}

/// One holder at a time, timed by the database's clock; a clean stop hands
/// the lease over at once.
async fn a_lease_has_one_holder_until_it_expires(b: &Backend) {
    let location = b.fresh();
    let a = Store::connect(&location, false).await.expect("open");
    let other = Store::connect(&location, false)
        .await
        .expect("second handle");
    assert_eq!(a.lease_holder("maintenance").await.expect("read"), None);
    assert!(a.take_lease("maintenance", "a", 1500).await.expect("take"));
    assert!(!other
        .take_lease("maintenance", "b", 1500)
        .await
        .expect("try"));
    assert!(a.take_lease("maintenance", "a", 1500).await.expect("renew"));
    let (holder, left) = other
        .lease_holder("maintenance")
        .await
        .expect("read")
        .expect("held");
    assert_eq!(holder, "a");
    assert!(left > 0 && left <= 1500, "{left} ms left");
    // Unrenewed, it expires and another takes it.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert!(other
        .take_lease("maintenance", "b", 1500)
        .await
        .expect("take"));
    assert!(!a.take_lease("maintenance", "a", 1500).await.expect("try"));
    // Another lease is independent.
    assert!(a.take_lease("other", "a", 1500).await.expect("take"));
    other
        .release_lease("maintenance", "b")
        .await
        .expect("release");
    a.release_lease("maintenance", "b-not-me")
        .await
        .expect("no-op");
    assert!(a.take_lease("maintenance", "a", 1500).await.expect("take"));
    a.close().await;
    other.close().await;
}

/// Every replica's row, with its digest and its age on the database's clock.
async fn replicas_see_each_other_and_their_policy_digests(b: &Backend) {
    let location = b.fresh();
    let store = Store::connect(&location, false).await.expect("open");
    store
        .announce("r1", "r1/a", "digest-1", 5)
        .await
        .expect("announce");
    store
        .announce("r2", "r2/b", "digest-2", 6)
        .await
        .expect("announce");
    // A restart replaces the row of its name.
    store
        .announce("r1", "r1/c", "digest-1", 7)
        .await
        .expect("announce");
    let mut rows = store.replicas().await.expect("read");
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].instance.as_str(), rows[0].started_ms), ("r1/c", 7));
    assert_eq!(rows[1].policy_digest, "digest-2");
    assert!(
        rows.iter().all(|r| (-1000..5000).contains(&r.age_ms)),
        "{rows:?}"
    );
    store.withdraw("r2/b").await.expect("withdraw");
    assert_eq!(store.replicas().await.expect("read").len(), 1);
    store.close().await;
}

/// The source of a migration must be a store: a mistyped path or an empty
/// database is refused and left untouched (no file, no tables).
async fn only_an_existing_store_is_a_source(b: &Backend) {
    let empty = b.fresh();
    let err = match Store::connect_existing(&empty).await {
        Ok(_) => panic!("an empty location opened as a store"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("holds no trustpool store"), "{err}");
    match &empty {
        DbLocation::Sqlite(path) => assert!(!path.exists(), "a file was created"),
        _ => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::AnyConnection::connect(&raw_url(&empty))
                .await
                .expect("raw connection");
            let sql = if b.engine() == Engine::Postgres {
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'"
            } else {
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE()"
            };
            let n: i64 = sqlx::query(sql)
                .fetch_one(&mut conn)
                .await
                .expect("count tables")
                .try_get("n")
                .expect("n");
            assert_eq!(n, 0, "tables were created in the empty database");
            let _ = conn.close().await;
        }
    }
    let location = b.fresh();
    let store = Store::connect(&location, false).await.expect("create");
    store
        .insert_enrolment(&enrolment("host-a"))
        .await
        .expect("enrol");
    let id = store.store_id().to_string();
    store.close().await;
    let source = Store::connect_existing(&location)
        .await
        .expect("an existing store");
    assert_eq!(source.store_id(), id);
    source.close().await;
}
