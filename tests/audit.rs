//! The tamper-evident audit log: recording, sealing, verification (and what it catches),
//! the append-only guard per role, purges, the `hearth audit` CLI and the FHIR AuditEvent
//! API.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Ctx, ctx, env, owner_pool};
use hearth::audit::{
    self, AuditAction, AuditAgent, AuditOutcome, AuditQuery, AuditRecord, BreakReason,
};
use hearth::store::Store;
use hearth::tenant::TenantId;
use serde_json::Value;
use sqlx::PgPool;

async fn admin_pool() -> PgPool {
    hearth::store::connect(&env("HEARTH_ADMIN_DATABASE_URL"), 2)
        .await
        .expect("connect as the superuser")
}

fn agent(who: Option<&str>, client: Option<&str>, subject: &str) -> AuditAgent {
    AuditAgent {
        who: who.map(str::to_owned),
        client_id: client.map(str::to_owned),
        subject: subject.to_owned(),
        issuer: "hearth".to_owned(),
        on_behalf_of: None,
    }
}

/// A record with a recognisable request id (`seed-{n}`).
fn seed(n: usize, event: &'static str, action: AuditAction) -> AuditRecord {
    let mut rec = AuditRecord::new(event, action, AuditOutcome::Success);
    rec.request_id = Some(format!("seed-{n}"));
    rec.source_ip = Some("192.0.2.7".to_owned());
    rec.user_agent = Some("audit-test/1".to_owned());
    rec.purpose = Some("TREAT".to_owned());
    rec.agent = Some(agent(Some("Practitioner/p1"), None, "user-1"));
    rec
}

/// Every event of the tenant, oldest first, through the library.
async fn all_events(store: &Store, tenant: &TenantId) -> Vec<hearth::audit::StoredEvent> {
    let q = AuditQuery {
        count: 1000,
        ..AuditQuery::default()
    };
    let mut events = audit::search(store, tenant, &q)
        .await
        .expect("search")
        .events;
    events.reverse();
    events
}

/// Change stored audit rows as the superuser with triggers off: what an attacker with
/// database access could do, and what `verify` must notice.
async fn tamper(sql: &str, tenant: &TenantId, seq: i64) {
    let admin = admin_pool().await;
    let mut tx = admin.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("replica mode");
    let changed = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(tenant.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await
        .expect("tamper")
        .rows_affected();
    assert_eq!(changed, 1, "{sql}");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn recorded_events_are_sealed_and_verify() {
    let ctx = ctx().await;
    let (store, tenant) = (&ctx.store, &ctx.tenant);

    let mut first = seed(1, "read", AuditAction::Read);
    first.patients = vec!["pat-1".into()];
    first.entities = vec!["Observation/o1/_history/2".into()];
    first.reasons = vec!["care-team".into(), "quote\"and\\slash,comma".into()];
    first.agent.as_mut().expect("agent").on_behalf_of = Some("Practitioner/p9".into());
    audit::record_now(store, tenant, &first)
        .await
        .expect("record_now");

    // record_all: several events in one statement, in the caller's transaction.
    let mut batch = Vec::new();
    for n in 2..=4 {
        let mut rec = seed(n, "create", AuditAction::Create);
        rec.entities = vec![format!("Patient/pat-{n}/_history/1")];
        rec.patients = vec![format!("pat-{n}")];
        batch.push(rec);
    }
    let mut unauthenticated = AuditRecord::new(
        "auth-failure",
        AuditAction::Execute,
        AuditOutcome::MinorFailure,
    );
    unauthenticated.outcome_text = Some("HTTP 401".into());
    batch.push(unauthenticated);
    let mut tx = store.begin(tenant).await.expect("begin");
    audit::record_all(&mut tx, &batch)
        .await
        .expect("record_all");
    tx.commit().await.expect("commit");

    // A rolled-back change leaves no audit row.
    let mut tx = store.begin(tenant).await.expect("begin");
    audit::record(&mut tx, &seed(99, "update", AuditAction::Update))
        .await
        .expect("record");
    drop(tx);

    let events = all_events(store, tenant).await;
    assert_eq!(events.len(), 5);
    let stored = &events[0];
    assert_eq!(stored.event, "read");
    assert_eq!(stored.action, "R");
    assert_eq!(stored.patients, vec!["pat-1"]);
    assert_eq!(stored.reasons, first.reasons);
    assert_eq!(stored.agent_who.as_deref(), Some("Practitioner/p1"));
    assert_eq!(
        stored.agent_on_behalf_of.as_deref(),
        Some("Practitioner/p9")
    );
    assert_eq!(stored.agent_issuer.as_deref(), Some("hearth"));
    let requests: Vec<_> = events
        .iter()
        .map(|e| e.request_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(requests, ["seed-1", "seed-2", "seed-3", "seed-4", ""]);
    assert_eq!(events[4].agent_subject, None);
    assert_eq!(events[4].outcome, 4);

    // (A `hearth serve` of another test binary may seal this tenant at any moment.)
    let before = audit::verify(store, tenant).await.expect("verify");
    assert!(before.is_ok());
    assert_eq!(before.sealed + before.unsealed, 5);

    assert!(audit::seal(store, tenant).await.expect("seal") <= 5);
    assert_eq!(audit::seal(store, tenant).await.expect("seal again"), 0);
    let report = audit::verify(store, tenant).await.expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.sealed, report.unsealed), (5, 0));
    assert_eq!(report.head_position, 5);
    assert_eq!(report.head_hash.len(), 64);

    // More events continue the same chain.
    audit::record_now(store, tenant, &seed(6, "vread", AuditAction::Read))
        .await
        .expect("record_now");
    audit::seal(store, tenant).await.expect("seal");
    let report = audit::verify(store, tenant).await.expect("verify");
    assert!(report.is_ok());
    assert_eq!(report.sealed, 6);
}

async fn sealed_tenant(n: usize) -> (Ctx, Vec<hearth::audit::StoredEvent>) {
    let ctx = ctx().await;
    for i in 1..=n {
        let mut rec = seed(i, "read", AuditAction::Read);
        rec.patients = vec![format!("pat-{i}")];
        audit::record_now(&ctx.store, &ctx.tenant, &rec)
            .await
            .expect("record");
    }
    audit::seal(&ctx.store, &ctx.tenant).await.expect("seal");
    let events = all_events(&ctx.store, &ctx.tenant).await;
    (ctx, events)
}

#[tokio::test]
async fn an_altered_event_is_found() {
    let (ctx, events) = sealed_tenant(5).await;
    let victim = &events[2];
    tamper(
        "UPDATE audit_events SET patients = '{someone-else}' WHERE tenant_id = $1 AND seq = $2",
        &ctx.tenant,
        victim.seq,
    )
    .await;
    let report = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify");
    let broken = report.broken.expect("the change is found");
    assert_eq!(broken.position, 3);
    assert_eq!(broken.event_id, Some(victim.id));
    assert_eq!(broken.reason, BreakReason::HashMismatch);
    assert_eq!(report.sealed, 2, "links before the break verified");
}

#[tokio::test]
async fn an_altered_timestamp_is_found() {
    let (ctx, events) = sealed_tenant(3).await;
    tamper(
        "UPDATE audit_events SET recorded = recorded - interval '1 microsecond'
          WHERE tenant_id = $1 AND seq = $2",
        &ctx.tenant,
        events[0].seq,
    )
    .await;
    let broken = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify")
        .broken
        .expect("found");
    assert_eq!(
        (broken.position, broken.reason),
        (1, BreakReason::HashMismatch)
    );
}

#[tokio::test]
async fn a_deleted_event_is_found() {
    let (ctx, events) = sealed_tenant(4).await;
    tamper(
        "DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2",
        &ctx.tenant,
        events[1].seq,
    )
    .await;
    let report = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify");
    let broken = report.broken.expect("the deletion is found");
    assert_eq!(broken.position, 2);
    assert_eq!(broken.event_seq, Some(events[1].seq));
    assert_eq!(broken.reason, BreakReason::MissingEvent);
}

#[tokio::test]
async fn a_deleted_or_rewritten_link_is_found() {
    let (ctx, events) = sealed_tenant(4).await;
    tamper(
        "DELETE FROM audit_chain WHERE tenant_id = $1 AND event_seq = $2",
        &ctx.tenant,
        events[1].seq,
    )
    .await;
    let broken = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify")
        .broken
        .expect("found");
    assert_eq!(
        (broken.position, broken.reason),
        (2, BreakReason::MissingLink)
    );

    let (ctx, events) = sealed_tenant(4).await;
    tamper(
        "UPDATE audit_chain SET prev_hash = sha256('forged') WHERE tenant_id = $1 AND event_seq = $2",
        &ctx.tenant,
        events[2].seq,
    )
    .await;
    let broken = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify")
        .broken
        .expect("found");
    assert_eq!(
        (broken.position, broken.reason),
        (3, BreakReason::PrevHashMismatch)
    );
}

#[tokio::test]
async fn a_late_commit_is_sealed_later() {
    let ctx = ctx().await;
    let (store, tenant) = (&ctx.store, &ctx.tenant);
    // An event whose transaction stays open has a lower seq than events committed after it.
    let mut slow = store.begin(tenant).await.expect("begin");
    audit::record(&mut slow, &seed(1, "update", AuditAction::Update))
        .await
        .expect("record");
    for i in 0..3u64 {
        audit::record_now(store, tenant, &seed(2, "read", AuditAction::Read))
            .await
            .expect("record_now");
        audit::seal(store, tenant).await.expect("seal");
        let report = audit::verify(store, tenant).await.expect("verify");
        assert!(report.is_ok());
        assert_eq!((report.sealed, report.unsealed), (i + 1, 0));
    }
    slow.commit().await.expect("commit late");
    audit::seal(store, tenant).await.expect("seal");
    let report = audit::verify(store, tenant).await.expect("verify");
    assert!(report.is_ok());
    assert_eq!((report.sealed, report.unsealed), (4, 0));
    let links = chain_seqs(tenant).await;
    let lowest = links.iter().map(|l| l.1).min().expect("links");
    assert_eq!(
        links.last().map(|l| l.1),
        Some(lowest),
        "the late event (lowest seq) is the last link: {links:?}"
    );
}

/// (position, event seq) of the tenant's chain, read as the owner.
async fn chain_seqs(tenant: &TenantId) -> Vec<(i64, i64)> {
    let owner = owner_pool().await;
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await
        .expect("tenant");
    let links = sqlx::query_as(
        "SELECT position, event_seq FROM audit_chain WHERE tenant_id = $1 ORDER BY position",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *tx)
    .await
    .expect("chain");
    tx.rollback().await.expect("rollback");
    links
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_stays_valid_under_concurrent_interleaved_commits() {
    let mut ctx = ctx().await;
    // Room for every writer and the sealer at once.
    let pool = hearth::store::connect(&env("DATABASE_URL"), 12)
        .await
        .expect("pool");
    ctx.store = Store::new(pool, 1000);
    const TASKS: usize = 8;
    const PER_TASK: usize = 40;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealer = {
        let (store, tenant, done) = (ctx.store.clone(), ctx.tenant.clone(), done.clone());
        tokio::spawn(async move {
            let mut seals = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                audit::seal(&store, &tenant).await.expect("seal");
                seals += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            seals
        })
    };
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let (store, tenant) = (ctx.store.clone(), ctx.tenant.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let n = t * PER_TASK + i;
                let mut tx = store.begin(&tenant).await.expect("begin");
                if n.is_multiple_of(3) {
                    let batch = vec![
                        seed(n, "create", AuditAction::Create),
                        seed(n, "update", AuditAction::Update),
                    ];
                    audit::record_all(&mut tx, &batch)
                        .await
                        .expect("record_all");
                } else {
                    audit::record(&mut tx, &seed(n, "read", AuditAction::Read))
                        .await
                        .expect("record");
                }
                // Hold some transactions open so commits interleave out of seq order.
                tokio::time::sleep(Duration::from_millis(((n * 7) % 5) as u64)).await;
                if n % 11 == 5 {
                    drop(tx); // rolled back: a seq that never appears
                } else {
                    tx.commit().await.expect("commit");
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seals = sealer.await.expect("sealer");
    assert!(seals > 3, "the sealer ran during the load ({seals} times)");
    audit::seal(&ctx.store, &ctx.tenant)
        .await
        .expect("final seal");
    let expected: usize = (0..TASKS * PER_TASK)
        .filter(|n| n % 11 != 5)
        .map(|n| if n.is_multiple_of(3) { 2 } else { 1 })
        .sum();
    let report = audit::verify(&ctx.store, &ctx.tenant)
        .await
        .expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.sealed as usize, expected);
    assert_eq!(report.unsealed, 0);
}

#[tokio::test]
async fn the_background_sealer_seals_every_tenant_with_new_events() {
    let a = ctx().await;
    let b = ctx().await;
    for ctx in [&a, &b] {
        audit::record_now(&ctx.store, &ctx.tenant, &seed(1, "read", AuditAction::Read))
            .await
            .expect("record");
    }
    let pending = audit::seal_pending(&a.store).await.expect("pending");
    // (Unless another test's `hearth serve` was quicker.)
    for ctx in [&a, &b] {
        let report = audit::verify(&ctx.store, &ctx.tenant)
            .await
            .expect("verify");
        assert!(report.unsealed == 0 || pending.contains(&ctx.tenant));
    }
    let sealer = tokio::spawn(audit::run_sealer(
        a.store.clone(),
        Duration::from_millis(50),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for ctx in [&a, &b] {
            let report = audit::verify(&ctx.store, &ctx.tenant)
                .await
                .expect("verify");
            assert!(report.is_ok());
            all &= report.unsealed == 0 && report.sealed == 1;
        }
        if all {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not sealed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sealer.abort();
    let pending = audit::seal_pending(&a.store).await.expect("pending");
    assert!(!pending.contains(&a.tenant) && !pending.contains(&b.tenant));
}

fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => format!("not a database error: {other}"),
    }
}

/// Run `sql` in a transaction with the tenant (and optionally the maintenance setting) set;
/// always rolled back. Returns the SQLSTATE on failure.
async fn attempt(
    pool: &PgPool,
    tenant: &TenantId,
    maintenance: bool,
    sql: &str,
) -> Result<u64, String> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT set_config('hearth.tenant', $1, true), set_config('lock_timeout', '5s', true)",
    )
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await
    .expect("set tenant");
    if maintenance {
        sqlx::query("SELECT set_config('hearth.audit_maintenance', 'on', true)")
            .execute(&mut *tx)
            .await
            .expect("maintenance");
    }
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| sqlstate(&e));
    tx.rollback().await.expect("rollback");
    result
}

const CHANGES: &[&str] = &[
    "UPDATE audit_events SET outcome = 12",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
    "UPDATE audit_chain SET hash = prev_hash",
    "DELETE FROM audit_chain",
    "TRUNCATE audit_chain",
    "DELETE FROM audit_anchors",
    "INSERT INTO audit_anchors (tenant_id, position, hash, purged_events, purged_before)
         SELECT tenant_id, position, hash, 0, now() FROM audit_chain LIMIT 1",
];

#[tokio::test]
async fn the_app_role_cannot_change_or_remove_audit_rows() {
    let (ctx, _) = sealed_tenant(2).await;
    let app = common::app_pool().await;
    for maintenance in [false, true] {
        for sql in CHANGES {
            let result = attempt(&app, &ctx.tenant, maintenance, sql).await;
            assert_eq!(
                result,
                Err("42501".to_owned()),
                "{sql} (maintenance {maintenance})"
            );
        }
    }
    // What it may do: insert through record() (not choosing seq, id or time), read, seal.
    let forged = attempt(
        &app,
        &ctx.tenant,
        false,
        "INSERT INTO audit_events (tenant_id, recorded, event, action, outcome)
         VALUES (current_setting('hearth.tenant'), now() - interval '1 year', 'read', 'R', 0)",
    )
    .await;
    assert_eq!(forged, Err("42501".to_owned()), "no backdating");
    assert!(
        audit::verify(&ctx.store, &ctx.tenant)
            .await
            .expect("verify")
            .is_ok()
    );
}

/// The maintenance role exists and the owner may take the path (a DBA's grant). Retried:
/// tests granting at the same moment can collide on the catalog row.
async fn grant_maintenance_to_owner() {
    let admin = admin_pool().await;
    let owner: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&owner_pool().await)
        .await
        .expect("owner name");
    let grant = format!(
        "DO $$ BEGIN
             IF to_regrole('hearth_audit_maintainer') IS NULL THEN
                 CREATE ROLE hearth_audit_maintainer NOLOGIN;
             END IF;
             IF NOT pg_has_role('{owner}', 'hearth_audit_maintainer', 'USAGE') THEN
                 GRANT hearth_audit_maintainer TO \"{owner}\";
             END IF;
         END $$"
    );
    for attempt in 0.. {
        match sqlx::query(sqlx::AssertSqlSafe(grant.clone()))
            .execute(&admin)
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                eprintln!("grant failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("grant hearth_audit_maintainer: {e}"),
        }
    }
}

#[tokio::test]
async fn the_owner_cannot_either_except_through_the_maintenance_path() {
    let (ctx, _) = sealed_tenant(3).await;
    let owner = owner_pool().await;
    // (Deleting no anchor fires no row trigger: there is none to delete.)
    for sql in CHANGES
        .iter()
        .filter(|s| !s.starts_with("DELETE FROM audit_anchors"))
    {
        assert_eq!(
            attempt(&owner, &ctx.tenant, false, sql).await,
            Err("42501".to_owned()),
            "{sql}"
        );
    }
    grant_maintenance_to_owner().await;
    // Member of the role but without the setting: still refused.
    assert_eq!(
        attempt(&owner, &ctx.tenant, false, "DELETE FROM audit_events").await,
        Err("42501".to_owned())
    );
    // The maintenance path (rolled back: RLS keeps it to this tenant anyway).
    assert_eq!(
        attempt(&owner, &ctx.tenant, true, "DELETE FROM audit_events").await,
        Ok(3)
    );
    assert_eq!(
        attempt(
            &owner,
            &ctx.tenant,
            true,
            "UPDATE audit_chain SET hash = hash"
        )
        .await,
        Ok(3)
    );
    assert!(
        audit::verify(&ctx.store, &ctx.tenant)
            .await
            .expect("verify")
            .is_ok()
    );
}

async fn db_now(store: &Store) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(store.pool())
        .await
        .expect("clock")
}

#[tokio::test]
async fn a_purge_removes_old_events_and_reanchors_the_chain() {
    let (ctx, _) = sealed_tenant(3).await;
    let (store, tenant) = (&ctx.store, &ctx.tenant);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = db_now(store).await;
    for n in 4..=5 {
        audit::record_now(store, tenant, &seed(n, "read", AuditAction::Read))
            .await
            .expect("record");
    }
    audit::seal(store, tenant).await.expect("seal");
    grant_maintenance_to_owner().await;
    let purged = audit::purge(&owner_pool().await, tenant, cutoff)
        .await
        .expect("purge");
    assert_eq!((purged.purged, purged.anchor_position), (3, 3));
    let left: Vec<_> = all_events(store, tenant)
        .await
        .into_iter()
        .map(|e| e.request_id.unwrap_or_default())
        .collect();
    assert_eq!(left, ["seed-4", "seed-5"]);
    let report = audit::verify(store, tenant).await.expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.anchor_position, report.sealed), (3, 2));
    // The chain goes on after the anchor; a second purge with the same cutoff does nothing.
    audit::record_now(store, tenant, &seed(6, "read", AuditAction::Read))
        .await
        .expect("record");
    audit::seal(store, tenant).await.expect("seal");
    let report = audit::verify(store, tenant).await.expect("verify");
    assert!(report.is_ok());
    assert_eq!((report.sealed, report.head_position), (3, 6));
    let again = audit::purge(&owner_pool().await, tenant, cutoff)
        .await
        .expect("purge");
    assert_eq!(again.purged, 0);
    // Without the maintenance path the purge is refused.
    let refused = audit::purge(&common::app_pool().await, tenant, Utc::now()).await;
    assert!(refused.is_err());
}

fn hearth_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env(
            "HEARTH_MIGRATION_DATABASE_URL",
            env("HEARTH_MIGRATION_DATABASE_URL"),
        )
        .env("HEARTH_LOG", "warn")
        .output()
        .expect("run hearth")
}

#[tokio::test]
async fn the_cli_seals_verifies_and_exits_1_on_a_broken_chain() {
    let ctx = ctx().await;
    for n in 1..=3 {
        audit::record_now(&ctx.store, &ctx.tenant, &seed(n, "read", AuditAction::Read))
            .await
            .expect("record");
    }
    let tenant = ctx.tenant.as_str();
    let sealed = hearth_cli(&["audit", "seal", "--tenant", tenant]);
    assert!(sealed.status.success(), "{sealed:?}");
    assert!(String::from_utf8_lossy(&sealed.stdout).contains("audit events sealed"));

    // verify seals what is new first.
    audit::record_now(&ctx.store, &ctx.tenant, &seed(4, "read", AuditAction::Read))
        .await
        .expect("record");
    let ok = hearth_cli(&["audit", "verify", "--tenant", tenant]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("verified: 4 sealed, 0 unsealed"), "{out}");

    let events = all_events(&ctx.store, &ctx.tenant).await;
    tamper(
        "UPDATE audit_events SET agent_who = 'Practitioner/nobody' WHERE tenant_id = $1 AND seq = $2",
        &ctx.tenant,
        events[1].seq,
    )
    .await;
    let broken = hearth_cli(&["audit", "verify", "--tenant", tenant]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.contains("BROKEN at position 2"), "{out}");
    assert!(out.contains(&events[1].id.to_string()), "{out}");
    assert!(out.contains("hash mismatch"), "{out}");

    // A purge never erases the evidence of a break.
    grant_maintenance_to_owner().await;
    let refused = hearth_cli(&[
        "audit",
        "purge",
        "--tenant",
        tenant,
        "--older-than-days",
        "0",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is broken at position 2"));
    assert_eq!(all_events(&ctx.store, &ctx.tenant).await.len(), 4);

    // On an intact chain it removes what is older than the retention.
    let (intact, _) = sealed_tenant(2).await;
    let purged = hearth_cli(&[
        "audit",
        "purge",
        "--tenant",
        intact.tenant.as_str(),
        "--older-than-days",
        "0",
    ]);
    assert!(purged.status.success(), "{purged:?}");
    let out = String::from_utf8_lossy(&purged.stdout);
    assert!(out.contains("2 audit events recorded before"), "{out}");
    assert!(out.contains("anchored at position 2"), "{out}");
    let verified = hearth_cli(&["audit", "verify", "--tenant", intact.tenant.as_str()]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(String::from_utf8_lossy(&verified.stdout).contains("anchored at position 2"));

    let unknown = hearth_cli(&["audit", "verify", "--tenant", "no-such-tenant-here"]);
    assert_eq!(unknown.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------
// The FHIR API.

const AUDIT_SCOPE: &str = "system/AuditEvent.rs";

async fn get_json(ctx: &Ctx, token: &str, path: &str) -> (u16, Value) {
    let response = ctx
        .client
        .get(ctx.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// The seed numbers (`seed-N` request ids) among a searchset's AuditEvents; every
/// AuditEvent is also checked against the R4 rules.
fn seeds_of(bundle: &Value) -> BTreeSet<usize> {
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    let mut seeds = BTreeSet::new();
    for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
        let resource = entry["resource"].clone();
        assert_eq!(resource["resourceType"], "AuditEvent");
        hearth::resource::check(resource.clone())
            .unwrap_or_else(|e| panic!("not a valid R4 AuditEvent: {e:?}\n{resource}"));
        for entity in resource["entity"].as_array().cloned().unwrap_or_default() {
            if let Some(n) = entity["what"]["identifier"]["value"]
                .as_str()
                .and_then(|v| v.strip_prefix("seed-"))
            {
                seeds.insert(n.parse().expect("seed number"));
            }
        }
    }
    seeds
}

async fn search_seeds(ctx: &Ctx, token: &str, query: &str) -> BTreeSet<usize> {
    let (status, bundle) = get_json(ctx, token, &format!("AuditEvent?{query}")).await;
    assert_eq!(status, 200, "{query}: {bundle}");
    seeds_of(&bundle)
}

fn set(items: &[usize]) -> BTreeSet<usize> {
    items.iter().copied().collect()
}

/// Seeds 1-6 before `split`, 7-8 after it (a whole second later).
async fn seeded_for_search(ctx: &Ctx) -> DateTime<Utc> {
    let (store, tenant) = (&ctx.store, &ctx.tenant);
    let mut recs = Vec::new();
    let mut r1 = seed(1, "read", AuditAction::Read);
    r1.patients = vec!["pat-a".into()];
    r1.entities = vec!["Observation/o1/_history/2".into()];
    recs.push(r1);
    let mut r2 = seed(2, "search-type", AuditAction::Execute);
    r2.patients = vec!["pat-a".into(), "pat-b".into()];
    r2.query = Some("patient=pat-a&code=http://loinc.org|1234-5".into());
    recs.push(r2);
    let mut r3 = seed(3, "create", AuditAction::Create);
    r3.patients = vec!["pat-b".into()];
    r3.entities = vec!["Observation/o1".into()];
    r3.agent = Some(agent(None, Some("client-x"), "client-x"));
    recs.push(r3);
    let mut r4 = seed(4, "access-denied", AuditAction::Read);
    r4.outcome = AuditOutcome::MinorFailure;
    r4.outcome_text = Some("outside the care team".into());
    r4.high_severity = true;
    r4.entities = vec!["Condition/c1".into()];
    r4.agent = Some(agent(Some("Practitioner/p2"), Some("app-y"), "user-2"));
    recs.push(r4);
    let mut r5 = seed(5, "delete", AuditAction::Delete);
    r5.entities = vec!["Observation/o2/_history/3".into()];
    recs.push(r5);
    let mut r6 = seed(6, "hl7v2-ingest", AuditAction::Create);
    r6.agent = None;
    r6.patients = vec!["pat-c".into()];
    recs.push(r6);
    for rec in &recs {
        audit::record_now(store, tenant, rec).await.expect("record");
    }
    // The next whole second, then events after it.
    let now = db_now(store).await;
    let split = DateTime::from_timestamp(now.timestamp() + 1, 0).expect("time");
    let wait = (split - now).to_std().unwrap_or_default() + Duration::from_millis(20);
    tokio::time::sleep(wait).await;
    for n in 7..=8 {
        let mut rec = seed(n, "read", AuditAction::Read);
        rec.patients = vec!["pat-a".into()];
        audit::record_now(store, tenant, &rec)
            .await
            .expect("record");
    }
    split
}

#[tokio::test]
async fn audit_events_are_searchable_by_each_parameter() {
    let ctx = ctx().await;
    let split = seeded_for_search(&ctx).await;
    let token = ctx.token_with(AUDIT_SCOPE).await;
    let t = token.as_str();
    let split_text = split.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let day_before = (split - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let day_after = (split + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();

    assert_eq!(
        search_seeds(&ctx, t, "").await,
        set(&[1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(
        search_seeds(&ctx, t, "patient=pat-a").await,
        set(&[1, 2, 7, 8])
    );
    assert_eq!(
        search_seeds(&ctx, t, "patient=Patient/pat-b").await,
        set(&[2, 3])
    );
    assert_eq!(
        search_seeds(&ctx, t, "patient=pat-a&patient=pat-b").await,
        set(&[2])
    );
    assert_eq!(
        search_seeds(&ctx, t, "patient=pat-b,pat-c").await,
        set(&[2, 3, 6])
    );
    assert_eq!(
        search_seeds(&ctx, t, "agent=Practitioner/p1").await,
        set(&[1, 2, 5, 7, 8])
    );
    assert_eq!(search_seeds(&ctx, t, "agent=client-x").await, set(&[3]));
    assert_eq!(search_seeds(&ctx, t, "agent=app-y").await, set(&[4]));
    assert_eq!(
        search_seeds(&ctx, t, &format!("date=lt{split_text}")).await,
        set(&[1, 2, 3, 4, 5, 6])
    );
    assert_eq!(
        search_seeds(&ctx, t, &format!("date=ge{split_text}&patient=pat-a")).await,
        set(&[7, 8])
    );
    assert_eq!(
        search_seeds(
            &ctx,
            t,
            &format!("date=ge{day_before}&date=le{day_after}&patient=pat-a")
        )
        .await,
        set(&[1, 2, 7, 8])
    );
    assert_eq!(search_seeds(&ctx, t, "date=lt2000-01-01").await, set(&[]));
    assert_eq!(
        search_seeds(&ctx, t, "entity=Observation/o1").await,
        set(&[1, 3])
    );
    assert_eq!(
        search_seeds(&ctx, t, "entity=Observation/o2,Condition/c1").await,
        set(&[4, 5])
    );
    assert_eq!(search_seeds(&ctx, t, "action=C").await, set(&[3, 6]));
    assert_eq!(search_seeds(&ctx, t, "action=D,E").await, set(&[2, 5]));
    assert_eq!(
        search_seeds(&ctx, t, "outcome=4&agent=user-2").await,
        set(&[4])
    );

    // _id
    let (_, bundle) = get_json(&ctx, t, "AuditEvent?agent=client-x").await;
    let id = bundle["entry"][0]["resource"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(search_seeds(&ctx, t, &format!("_id={id}")).await, set(&[3]));

    // Rendering: BALP shapes for a search and a non-REST event.
    let (_, bundle) = get_json(&ctx, t, "AuditEvent?agent=Practitioner/p1&action=E").await;
    let search = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["subtype"][0]["code"] == "search-type")
        .expect("the seeded search");
    assert_eq!(search["type"]["code"], "rest");
    assert_eq!(search["agent"][0]["who"]["reference"], "Practitioner/p1");
    assert_eq!(search["agent"][0]["requestor"], true);
    assert_eq!(search["agent"][1]["network"]["address"], "192.0.2.7");
    assert_eq!(search["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    let query = search["entity"]
        .as_array()
        .expect("entities")
        .iter()
        .find(|e| e["role"]["code"] == "24")
        .expect("query entity");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(query["query"].as_str().expect("base64"))
        .expect("base64");
    assert_eq!(decoded, b"patient=pat-a&code=http://loinc.org|1234-5");

    // Errors name the parameter.
    for bad in [
        "action=Q",
        "outcome=3",
        "date=soon",
        "flavour=x",
        "_page=forged",
    ] {
        let (status, outcome) = get_json(&ctx, t, &format!("AuditEvent?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
}

#[tokio::test]
async fn audit_searches_page_with_a_keyset_next_link() {
    let ctx = ctx().await;
    for n in 1..=7 {
        audit::record_now(&ctx.store, &ctx.tenant, &seed(n, "read", AuditAction::Read))
            .await
            .expect("record");
    }
    let token = ctx.token_with(AUDIT_SCOPE).await;
    let mut url = ctx.url("AuditEvent?agent=user-1&_count=3");
    let mut pages = Vec::new();
    loop {
        let bundle: Value = ctx
            .client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let seeds: Vec<usize> = seeds_of(&bundle).into_iter().collect();
        assert!(seeds.len() <= 3);
        pages.push(seeds);
        let next = bundle["link"]
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().expect("url").to_owned());
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![vec![5, 6, 7], vec![2, 3, 4], vec![1]],
        "newest first"
    );
}

#[tokio::test]
async fn reading_the_audit_log_needs_an_audit_scope_and_is_itself_audited() {
    let ctx = ctx().await;
    let mut rec = seed(1, "read", AuditAction::Read);
    rec.patients = vec!["pat-z".into()];
    audit::record_now(&ctx.store, &ctx.tenant, &rec)
        .await
        .expect("record");
    let auditor = ctx.token_with(AUDIT_SCOPE).await;

    // Without a scope naming AuditEvent: 403, even with a wildcard, recorded.
    let clinician = ctx.token_with("system/*.rs").await;
    let (status, body) = get_json(&ctx, &clinician, "AuditEvent?patient=pat-z").await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = get_json(
        &ctx,
        &clinician,
        "AuditEvent/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, 403);
    // Without a token: 401, recorded as an authentication failure.
    let anonymous = ctx
        .client
        .get(ctx.url("AuditEvent"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);

    let (_, denied) = get_json(&ctx, &auditor, "AuditEvent?outcome=4").await;
    let denied: Vec<&Value> = denied["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let access_denied: Vec<_> = denied
        .iter()
        .filter(|r| r["subtype"][0]["code"] == "access-denied")
        .collect();
    assert_eq!(access_denied.len(), 2, "both refusals are recorded");
    assert!(access_denied.iter().all(|r| {
        r["outcomeDesc"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 403")
    }));
    assert!(
        access_denied
            .iter()
            .all(|r| r["extension"][0]["valueCode"] == "alert")
    );
    assert!(
        denied.iter().any(
            |r| r["subtype"][0]["code"] == "auth-failure" && r["agent"][0]["requestor"] == true
        )
    );

    // A search: recorded with the patient it named and the events it returned.
    let (status, bundle) = get_json(&ctx, &auditor, "AuditEvent?patient=pat-z").await;
    assert_eq!(status, 200);
    let seen = bundle["entry"][0]["resource"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A read: recorded with the event it returned.
    let (status, read) = get_json(&ctx, &auditor, &format!("AuditEvent/{seen}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["id"], seen.as_str());
    hearth::resource::check(read.clone()).expect("a valid R4 AuditEvent");

    let (_, trail) = get_json(
        &ctx,
        &auditor,
        &format!("AuditEvent?entity=AuditEvent/{seen}"),
    )
    .await;
    let subtypes: HashSet<String> = trail["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["resource"]["subtype"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        subtypes,
        HashSet::from(["search-type".to_owned(), "read".to_owned()]),
        "{trail}"
    );
    let search_record = trail["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["subtype"][0]["code"] == "search-type")
        .expect("search record");
    assert_eq!(search_record["action"], "E");
    assert!(
        search_record["entity"]
            .as_array()
            .expect("entities")
            .iter()
            .any(|e| e["what"]["reference"] == "Patient/pat-z")
    );
    assert_eq!(
        search_record["agent"][0]["who"]["identifier"]["value"],
        "test-client"
    );

    // Unknown and malformed ids: 404. Writes: 405.
    let (status, _) = get_json(
        &ctx,
        &auditor,
        "AuditEvent/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&ctx, &auditor, "AuditEvent/not-a-uuid").await;
    assert_eq!(status, 404);
    let write_token = ctx.token_with("system/AuditEvent.cruds").await;
    let body = serde_json::json!({"resourceType": "AuditEvent"});
    for request in [
        ctx.client.post(ctx.url("AuditEvent")),
        ctx.client.put(ctx.url(&format!("AuditEvent/{seen}"))),
        ctx.client.delete(ctx.url(&format!("AuditEvent/{seen}"))),
        ctx.client.patch(ctx.url(&format!("AuditEvent/{seen}"))),
    ] {
        let response = request
            .bearer_auth(&write_token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        common::expect_outcome(response, 405).await;
    }
    // POST _search works like GET.
    let response = ctx
        .client
        .post(ctx.url("AuditEvent/_search"))
        .bearer_auth(&auditor)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("patient=pat-z&action=R")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let bundle: Value = response.json().await.expect("json");
    assert_eq!(seeds_of(&bundle), set(&[1]));
}

/// A user's `user/AuditEvent.rs` goes through the access decision like any user scope. The
/// decision does not (yet) know auditors: AuditEvent is in the Patient compartment, and a
/// user's access to it cannot be confined there, so it is refused — and the refusal, with
/// the user, is in the log.
#[tokio::test]
async fn a_user_scope_for_auditevent_goes_through_the_access_decision() {
    let ctx = ctx().await;
    let base = format!("{}/fhir/{}", ctx.origin, ctx.tenant);
    let token = hearth::auth::TokenService::new(ctx.store.clone())
        .mint_with(
            &ctx.tenant,
            &base,
            "auditor-1",
            "user/AuditEvent.rs",
            300,
            hearth::auth::TokenContext {
                fhir_user: Some("Practitioner/auditor-1".into()),
                patient: None,
            },
        )
        .await
        .expect("mint");
    let (status, body) = get_json(&ctx, &token, "AuditEvent").await;
    assert_eq!(status, 403, "{body}");
    let auditor = ctx.token_with(AUDIT_SCOPE).await;
    let (_, refusals) = get_json(&ctx, &auditor, "AuditEvent?agent=Practitioner/auditor-1").await;
    let refusal = &refusals["entry"][0]["resource"];
    assert_eq!(refusal["subtype"][0]["code"], "access-denied", "{refusals}");
    assert_eq!(
        refusal["agent"][0]["who"]["reference"],
        "Practitioner/auditor-1"
    );
    assert_eq!(refusal["outcome"], "4");
}

/// The cost of `record_now` (BEGIN + INSERT + COMMIT, one event with typical fields):
/// median and 99th percentile of 1000 calls. Not a benchmark gate: it prints the figures
/// and only fails far above the target.
#[tokio::test]
async fn record_now_cost() {
    let ctx = ctx().await;
    let mut rec = seed(1, "read", AuditAction::Read);
    rec.patients = vec!["pat-1".into()];
    rec.entities = vec!["Observation/o1/_history/1".into()];
    rec.reasons = vec!["scope system/*.rs".into()];
    for _ in 0..50 {
        audit::record_now(&ctx.store, &ctx.tenant, &rec)
            .await
            .expect("warm up");
    }
    let mut now_times = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = std::time::Instant::now();
        audit::record_now(&ctx.store, &ctx.tenant, &rec)
            .await
            .expect("record_now");
        now_times.push(started.elapsed());
    }
    // `record` alone, inside an open transaction (the write path's cost).
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("begin");
    let mut in_tx = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = std::time::Instant::now();
        audit::record(&mut tx, &rec).await.expect("record");
        in_tx.push(started.elapsed());
    }
    tx.commit().await.expect("commit");
    now_times.sort();
    in_tx.sort();
    let (median, p99) = (now_times[500], now_times[990]);
    eprintln!(
        "record_now: median {:?}, p99 {:?}; record in a transaction: median {:?}, p99 {:?}",
        median, p99, in_tx[500], in_tx[990]
    );
    assert!(
        median < Duration::from_millis(20),
        "record_now median {median:?}"
    );
    let started = std::time::Instant::now();
    let sealed = audit::seal(&ctx.store, &ctx.tenant).await.expect("seal");
    eprintln!("sealed {sealed} events in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    assert!(
        audit::verify(&ctx.store, &ctx.tenant)
            .await
            .expect("verify")
            .is_ok()
    );
    eprintln!("verified {sealed} links in {:?}", started.elapsed());
}
