//! Row-level security: the app role sees one tenant's rows, whatever the SQL says.

mod common;

use common::{app_pool, ctx, owner_pool, patient};
use hearth::store::Store;

async fn count_all(pool: &sqlx::PgPool, tenant: Option<&str>, table: &str) -> (i64, i64) {
    let mut tx = pool.begin().await.expect("begin");
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .expect("set tenant");
    }
    // No tenant filter on purpose: RLS alone must scope this.
    let column = if table == "tenants" {
        "id"
    } else {
        "tenant_id"
    };
    let sql = format!("SELECT count(*), count(DISTINCT {column}) FROM {table}");
    let row: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    tx.rollback().await.expect("rollback");
    row
}

const ALL_TABLES: &[&str] = &[
    "tenants",
    "resources",
    "resource_versions",
    "tenant_signing_keys",
    "search_token",
    "search_string",
    "search_date",
    "search_reference",
    "search_quantity",
    "search_number",
    "search_uri",
    "search_composite",
    "oauth_clients",
    "oauth_assertion_jtis",
    "oauth_revoked_tokens",
    "trusted_issuers",
    "care_relationships",
    "practitioner_sites",
    "patient_sites",
    "break_glass_grants",
    "audit_events",
    "audit_chain",
    "audit_anchors",
    "audit_seal_state",
    "hl7_messages",
    "ehr_registrations",
    "app_client_keys",
    "app_launches",
    "app_sessions",
    "ehr_sync_marks",
    "clinical_outbox",
    "clinical_chunks",
    "clinical_summaries",
    "ai_invocations",
    "ai_usage",
    "bulk_jobs",
    "bulk_files",
    "prior_auth_packets",
    "prior_auth_events",
];

#[tokio::test]
async fn every_table_has_forced_rls_and_a_tenant_policy() {
    ctx().await; // migrated
    let owner = owner_pool().await;
    let rows: Vec<(String, bool, bool, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations'
          ORDER BY 1",
    )
    .fetch_all(&owner)
    .await
    .expect("catalog");
    let mut names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    names.sort_unstable();
    let mut expected = ALL_TABLES.to_vec();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "a new table must join ALL_TABLES (and get RLS)"
    );
    for (table, enabled, forced, policies) in rows {
        assert!(enabled && forced, "{table}: RLS enabled and forced");
        assert_eq!(policies, 1, "{table}: tenant_isolation policy");
    }
}

#[tokio::test]
async fn app_role_with_tenant_a_set_sees_none_of_tenant_b() {
    let a = ctx().await;
    let b = ctx().await;
    for i in 0..3 {
        a.create(&patient(&format!("A{i}"))).await;
    }
    for i in 0..2 {
        b.create(&patient(&format!("B{i}"))).await;
    }
    let pool = app_pool().await;
    for table in [
        "resources",
        "resource_versions",
        "tenant_signing_keys",
        "tenants",
    ] {
        let (rows_a, tenants_a) = count_all(&pool, Some(a.tenant.as_str()), table).await;
        assert_eq!(
            tenants_a,
            if rows_a > 0 { 1 } else { 0 },
            "{table}: only tenant A visible"
        );
        let (rows_none, _) = count_all(&pool, None, table).await;
        assert_eq!(rows_none, 0, "{table}: no tenant set, no rows");
    }
    assert_eq!(
        count_all(&pool, Some(a.tenant.as_str()), "resources")
            .await
            .0,
        3
    );
    assert_eq!(
        count_all(&pool, Some(b.tenant.as_str()), "resources")
            .await
            .0,
        2
    );

    // Naming tenant B explicitly while A is set still yields nothing.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
        .bind(a.tenant.as_str())
        .execute(&mut *tx)
        .await
        .expect("set");
    let seen: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resource_versions WHERE tenant_id = $1")
            .bind(b.tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .expect("count");
    assert_eq!(seen, 0);
    // And writing a row for B while A is set is refused by the policy's WITH CHECK.
    let insert = sqlx::query(
        "INSERT INTO resource_versions (tenant_id, resource_type, id, version_id, last_updated, deleted, content)
         VALUES ($1, 'Patient', 'smuggled', 1, now(), false, '{}')",
    )
    .bind(b.tenant.as_str())
    .execute(&mut *tx)
    .await;
    let err = insert.expect_err("cross-tenant insert must fail");
    assert_eq!(
        hearth::store::sqlstate(&err).as_deref(),
        Some("42501"),
        "insufficient_privilege (RLS)"
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn the_app_role_cannot_switch_rls_off_or_rewrite_history() {
    let ctx = ctx().await;
    ctx.create(&patient("Immutable")).await;
    let pool = app_pool().await;
    for sql in [
        "ALTER TABLE resources DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE resources NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON resources",
        "SET row_security = off",
    ] {
        let mut tx = pool.begin().await.expect("begin");
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await;
        // `SET row_security = off` is allowed but makes RLS-filtered queries fail instead of
        // bypassing; the others need ownership.
        if sql.starts_with("SET") {
            let q = sqlx::query("SELECT count(*) FROM resources")
                .fetch_one(&mut *tx)
                .await;
            assert!(q.is_err(), "row_security=off must not bypass RLS");
        } else {
            assert!(result.is_err(), "{sql} must be refused");
        }
        tx.rollback().await.ok();
    }
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
        .bind(ctx.tenant.as_str())
        .execute(&mut *tx)
        .await
        .expect("set");
    let update = sqlx::query("UPDATE resource_versions SET content = '{}'")
        .execute(&mut *tx)
        .await;
    assert!(update.is_err(), "history is append-only for the app role");
    tx.rollback().await.ok();
}

#[tokio::test]
async fn the_server_refuses_roles_that_could_bypass_rls() {
    let app = Store::new(app_pool().await, 1000);
    assert_eq!(
        app.check_app_role().await.expect("check"),
        Vec::<String>::new()
    );
    let owner = Store::new(owner_pool().await, 1000);
    let problems = owner.check_app_role().await.expect("check");
    assert!(
        problems.iter().any(|p| p.contains("owns table resources")),
        "{problems:?}"
    );
}
