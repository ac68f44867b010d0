//! `trustpool-dbserver`: a PostgreSQL or MariaDB server of the test harness
//! (`trustpool_tests::dbserver`) for scripts: `scripts/bench --db-engine`.
//!
//! Starts the server in a temporary directory on a free port, with the
//! engine's durable defaults (`DbServer::start_durable`), creates
//! `--databases N` empty databases owned by the non-superuser `trustpool`
//! and prints their URLs, one per line. Then, for every line read on
//! standard input: `stats` prints the server's counters (`commits N`,
//! `queries N`), anything else is ignored. At the end of standard input the
//! server is stopped and its directory removed.

use clap::Parser;
use std::io::BufRead;
use trustpool_tests::dbserver::{DbServer, Engine};

#[derive(Parser)]
#[command(name = "trustpool-dbserver", about = "A database server for scripts")]
struct Args {
    /// postgres or mariadb.
    #[arg(long)]
    engine: String,
    /// How many empty databases to create.
    #[arg(long, default_value_t = 1)]
    databases: u32,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trustpool-dbserver: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let engine = match args.engine.as_str() {
        "postgres" | "postgresql" => Engine::Postgres,
        "mariadb" | "mysql" => Engine::MariaDb,
        other => anyhow::bail!("unknown engine {other} (postgres or mariadb)"),
    };
    let db = DbServer::start_durable(engine)?;
    if engine == Engine::Postgres {
        db.superuser_sql(None, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    }
    for i in 1..=args.databases {
        println!("{}", db.fresh_database(&format!("run{i}"))?);
    }
    eprintln!(
        "trustpool-dbserver: {engine} on port {}, pid {}",
        db.port(),
        db.pid()
    );
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "stats" {
            let (commits, queries) = stats(&db)?;
            println!("commits {commits}");
            println!("queries {queries}");
        }
    }
    Ok(())
}

/// Transactions committed and statements run since the server started,
/// over every database.
fn stats(db: &DbServer) -> anyhow::Result<(u64, u64)> {
    let number = |s: &str| -> anyhow::Result<u64> {
        s.split_whitespace()
            .last()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("unexpected counter {s:?}: {e}"))
    };
    match db.engine() {
        Engine::Postgres => {
            let commits = db.superuser_sql(
                None,
                "SELECT COALESCE(SUM(xact_commit), 0) FROM pg_stat_database",
            )?;
            let queries = db.superuser_sql(
                None,
                "SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements",
            )?;
            Ok((number(&commits)?, number(&queries)?))
        }
        Engine::MariaDb => {
            let commits = db.superuser_sql(None, "SHOW GLOBAL STATUS LIKE 'Com_commit'")?;
            let queries = db.superuser_sql(None, "SHOW GLOBAL STATUS LIKE 'Questions'")?;
            Ok((number(&commits)?, number(&queries)?))
        }
    }
}
