//! How `copilot status` and `copilot history --limit 20` scale with the size
//! of the ledger: 100, 10k and 100k deployments (each with five steps and a
//! gate run), on SQLite and, when COPILOT_TEST_DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/test) answers, on PostgreSQL.
//! Whole processes, medians of COPILOT_BENCH_ROUNDS (default 9) runs;
//! prints figures and the ratio to the 100-deployment ledger, asserts none.
//! The largest ledger is measured again without the indexes of ledger
//! migration 0006, in the same run, to show what they are worth. Then one
//! arena alone: 100 and 20,000 deployments of as many releases in
//! `production`, where the lookup of the deployment in progress must not
//! read the arena's history (migration 0007's partial index).
//! `cargo bench --bench ledger`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use copilot_ledger::Ledger;

const SIZES: [i64; 3] = [100, 10_000, 100_000];
/// Deployments (and releases) of the one-arena ledgers.
const ONE_ARENA_SIZES: [i64; 2] = [100, 20_000];

/// How the seeded deployments are laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Over the six arenas, of 100 releases.
    Spread,
    /// All in `production`, each of its own release.
    OneArena,
}
const ARENAS: [&str; 6] = [
    "local",
    "preview",
    "staging",
    "canary",
    "production",
    "hotfix",
];

fn copilot(root: &Path, ledger: &str, args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("--root")
        .arg(root)
        .args(["--output", "json"])
        .args(args)
        .env("COPILOT_LEDGER_URL", ledger)
        .env("COPILOT_ACTOR", "bench")
        .output()
        .expect("copilot runs");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seed `n` deployments spread over the six arenas and five years, each
/// with five steps and one gate run of three results; the newest of each
/// arena succeeded, none is in progress (the lookup of an active deployment
/// has nothing to find, its worst case).
async fn seed(url: &str, n: i64, shape: Shape) {
    let ledger = Ledger::connect(url).await.expect("ledger opens");
    ledger.close().await;
    let statements = if url.starts_with("sqlite:") {
        sqlite_seed(n, shape)
    } else {
        postgres_seed(n, shape)
    };
    let pool = copilot_db::Pool::connect(url, 1).await.unwrap();
    match &pool {
        copilot_db::Pool::Sqlite(p) => {
            let mut tx = p.begin().await.unwrap();
            for s in &statements {
                sqlx::query(s).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            sqlx::query("ANALYZE").execute(p).await.unwrap();
        }
        copilot_db::Pool::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            for s in &statements {
                sqlx::query(s).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            sqlx::query("ANALYZE").execute(p).await.unwrap();
        }
    }
    pool.close().await;
}

fn arena_case(i: &str) -> String {
    let arms: String = ARENAS
        .iter()
        .enumerate()
        .map(|(k, a)| format!(" WHEN {k} THEN '{a}'"))
        .collect();
    format!("CASE {i} % 6{arms} END")
}

fn sqlite_seed(n: i64, shape: Shape) -> Vec<String> {
    let (arena, r) = match shape {
        Shape::Spread => (arena_case("i"), 100),
        Shape::OneArena => ("'production'".to_string(), n),
    };
    let ts = |expr: &str| {
        format!(
            "strftime('%Y-%m-%dT%H:%M:%S.000000000+00:00', 1638316800 + ({expr}) * (157680000 / {n}), 'unixepoch')"
        )
    };
    let started = ts("i");
    let finished = ts("i");
    vec![
        format!(
            "INSERT INTO releases (id, version, image, config_hash, created_by, created_at) \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {r} - 1) \
             SELECT 'rel_bench' || i, 'v0.' || i, 'ghcr.io/acme/copilot-service:v0.' || i, 'sha256:bench', 'bench', {started} FROM k"
        ),
        format!(
            "INSERT INTO deployments (id, arena, release_id, previous_release_id, kind, strategy, state, created_by, started_at, finished_at) \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1) \
             SELECT printf('dep_bench%08d', i), {arena}, 'rel_bench' || (i % {r}), 'rel_bench' || ((i + {r} - 1) % {r}), 'promote', 'blue-green', \
             CASE WHEN i >= {n} - 6 THEN 'succeeded' WHEN i % 10 = 3 THEN 'rolled-back' WHEN i % 10 = 7 THEN 'failed' ELSE 'succeeded' END, \
             'bench', {started}, {finished} FROM k"
        ),
        format!(
            "INSERT INTO deployment_steps (deployment_id, seq, name, state, intent, outcome, started_at, finished_at) \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} * 5 - 1) \
             SELECT printf('dep_bench%08d', i / 5), i % 5 + 1, 'step-' || (i % 5 + 1), 'done', '{{}}', '{{}}', {s}, {s} FROM k",
            s = ts("i / 5")
        ),
        format!(
            "INSERT INTO gate_runs (id, arena, release_id, deployment_id, phase, outcome, started_at, finished_at) \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1) \
             SELECT printf('gr_bench%08d', i), {arena}, 'rel_bench' || (i % {r}), printf('dep_bench%08d', i), 'before', 'passed', {started}, {finished} FROM k"
        ),
        format!(
            "INSERT INTO gate_results (gate_run_id, gate, kind, outcome, summary, evidence, started_at, duration_ms) \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} * 3 - 1) \
             SELECT printf('gr_bench%08d', i / 3), 'gate-' || (i % 3), 'health', 'passed', 'ok', '{{}}', {s}, 12 FROM k",
            s = ts("i / 3")
        ),
    ]
}

fn postgres_seed(n: i64, shape: Shape) -> Vec<String> {
    let (arena, r) = match shape {
        Shape::Spread => (arena_case("i"), 100),
        Shape::OneArena => ("'production'".to_string(), n),
    };
    let ts = |expr: &str| {
        format!("timestamptz '2021-12-01 00:00:00+00' + ({expr}) * (interval '5 years' / {n})")
    };
    let started = ts("i");
    vec![
        format!(
            "INSERT INTO releases (id, version, image, config_hash, created_by, created_at) \
             SELECT 'rel_bench' || i, 'v0.' || i, 'ghcr.io/acme/copilot-service:v0.' || i, 'sha256:bench', 'bench', {started} \
             FROM generate_series(0, {r} - 1) AS i"
        ),
        format!(
            "INSERT INTO deployments (id, arena, release_id, previous_release_id, kind, strategy, state, created_by, started_at, finished_at) \
             SELECT 'dep_bench' || lpad(i::text, 8, '0'), {arena}, 'rel_bench' || (i % {r}), 'rel_bench' || ((i + {r} - 1) % {r}), 'promote', 'blue-green', \
             CASE WHEN i >= {n} - 6 THEN 'succeeded' WHEN i % 10 = 3 THEN 'rolled-back' WHEN i % 10 = 7 THEN 'failed' ELSE 'succeeded' END, \
             'bench', {started}, {started} FROM generate_series(0, {n} - 1) AS i ORDER BY i"
        ),
        format!(
            "INSERT INTO deployment_steps (deployment_id, seq, name, state, intent, outcome, started_at, finished_at) \
             SELECT 'dep_bench' || lpad((i / 5)::text, 8, '0'), i % 5 + 1, 'step-' || (i % 5 + 1), 'done', '{{}}', '{{}}', {s}, {s} \
             FROM generate_series(0, {n} * 5 - 1) AS i",
            s = ts("i / 5")
        ),
        format!(
            "INSERT INTO gate_runs (id, arena, release_id, deployment_id, phase, outcome, started_at, finished_at) \
             SELECT 'gr_bench' || lpad(i::text, 8, '0'), {arena}, 'rel_bench' || (i % {r}), 'dep_bench' || lpad(i::text, 8, '0'), 'before', 'passed', {started}, {started} \
             FROM generate_series(0, {n} - 1) AS i"
        ),
        format!(
            "INSERT INTO gate_results (gate_run_id, gate, kind, outcome, summary, evidence, started_at, duration_ms) \
             SELECT 'gr_bench' || lpad((i / 3)::text, 8, '0'), 'gate-' || (i % 3), 'health', 'passed', 'ok', '{{}}', {s}, 12 \
             FROM generate_series(0, {n} * 3 - 1) AS i",
            s = ts("i / 3")
        ),
    ]
}

/// The indexes ledger migration 0006 adds (same names on both backends).
const INDEXES_0006: [&str; 7] = [
    "deployments_by_arena_state",
    "deployments_by_arena_release",
    "deployments_by_started",
    "gate_runs_by_started",
    "gate_runs_by_deployment",
    "gate_results_by_gate",
    "audit_log_by_arena",
];

/// Drop migration 0006's indexes; the migration stays recorded as applied,
/// so opening the ledger does not put them back.
async fn drop_indexes(url: &str) {
    let pool = copilot_db::Pool::connect(url, 1).await.unwrap();
    for index in INDEXES_0006 {
        let sql = format!("DROP INDEX {index}");
        match &pool {
            copilot_db::Pool::Sqlite(p) => sqlx::query(&sql).execute(p).await.map(drop),
            copilot_db::Pool::Postgres(p) => sqlx::query(&sql).execute(p).await.map(drop),
        }
        .unwrap();
    }
    pool.close().await;
}

struct Row {
    size: String,
    status: f64,
    history: f64,
}

fn measure(root: &Path, url: &str, size: impl ToString, rounds: usize) -> Row {
    // One unmeasured run of each warms the file cache.
    copilot(root, url, &["status"]);
    copilot(root, url, &["history", "--limit", "20"]);
    let status = median(
        (0..rounds)
            .map(|_| copilot(root, url, &["status"]))
            .collect(),
    );
    let history = median(
        (0..rounds)
            .map(|_| copilot(root, url, &["history", "--limit", "20"]))
            .collect(),
    );
    Row {
        size: size.to_string(),
        status,
        history,
    }
}

fn print(backend: &str, rows: &[Row]) {
    println!("\n{backend}: whole processes, medians");
    println!(
        "{:>22} {:>12} {:>8} {:>20} {:>8}",
        "deployments", "status ms", "ratio", "history --limit 20", "ratio"
    );
    let (s0, h0) = (rows[0].status, rows[0].history);
    for r in rows {
        println!(
            "{:>22} {:>12.1} {:>8.2} {:>20.1} {:>8.2}",
            r.size,
            r.status,
            r.status / s0,
            r.history,
            r.history / h0
        );
    }
}

fn main() {
    let rounds: usize = std::env::var("COPILOT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let init = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .args(["init"])
        .arg(root)
        .output()
        .unwrap();
    assert!(init.status.success());

    let mut rows = Vec::new();
    for size in SIZES {
        let url = format!(
            "sqlite://{}",
            root.join(format!("ledger-{size}.db")).display()
        );
        let t = Instant::now();
        rt.block_on(seed(&url, size, Shape::Spread));
        eprintln!(
            "seeded {size} deployments (SQLite) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        rows.push(measure(root, &url, size, rounds));
        if size == SIZES[SIZES.len() - 1] {
            rt.block_on(drop_indexes(&url));
            rows.push(measure(root, &url, format!("{size} without 0006"), rounds));
        }
    }
    print("SQLite", &rows);
    let mut rows = Vec::new();
    for size in ONE_ARENA_SIZES {
        let url = format!(
            "sqlite://{}",
            root.join(format!("ledger-one-arena-{size}.db")).display()
        );
        rt.block_on(seed(&url, size, Shape::OneArena));
        rows.push(measure(root, &url, format!("{size} in one arena"), rounds));
    }
    print("SQLite, one arena (as many releases as deployments)", &rows);

    let admin = std::env::var("COPILOT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reachable = rt.block_on(async {
        match copilot_db::Pool::connect(&admin, 1).await {
            Ok(p) => {
                p.close().await;
                true
            }
            Err(_) => false,
        }
    });
    if !reachable {
        println!("\nPostgreSQL at {admin} does not answer: skipped");
        return;
    }
    let (base, _) = admin.rsplit_once('/').expect("a database URL");
    let mut rows = Vec::new();
    for size in SIZES {
        let name = format!("copilot_bench_ledger_{size}");
        let url = format!("{base}/{name}");
        rt.block_on(admin_sql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name}"),
        ));
        rt.block_on(admin_sql(&admin, &format!("CREATE DATABASE {name}")));
        let t = Instant::now();
        rt.block_on(seed(&url, size, Shape::Spread));
        eprintln!(
            "seeded {size} deployments (PostgreSQL) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        rows.push(measure(root, &url, size, rounds));
        if size == SIZES[SIZES.len() - 1] {
            rt.block_on(drop_indexes(&url));
            rows.push(measure(root, &url, format!("{size} without 0006"), rounds));
        }
        rt.block_on(admin_sql(
            &admin,
            &format!("DROP DATABASE {name} WITH (FORCE)"),
        ));
    }
    print("PostgreSQL", &rows);
    let mut rows = Vec::new();
    for size in ONE_ARENA_SIZES {
        let name = format!("copilot_bench_ledger_one_arena_{size}");
        let url = format!("{base}/{name}");
        rt.block_on(admin_sql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name}"),
        ));
        rt.block_on(admin_sql(&admin, &format!("CREATE DATABASE {name}")));
        rt.block_on(seed(&url, size, Shape::OneArena));
        rows.push(measure(root, &url, format!("{size} in one arena"), rounds));
        rt.block_on(admin_sql(
            &admin,
            &format!("DROP DATABASE {name} WITH (FORCE)"),
        ));
    }
    print(
        "PostgreSQL, one arena (as many releases as deployments)",
        &rows,
    );
}

async fn admin_sql(url: &str, sql: &str) {
    let pool = copilot_db::Pool::connect(url, 1).await.unwrap();
    if let copilot_db::Pool::Postgres(p) = &pool {
        sqlx::query(sql).execute(p).await.unwrap();
    }
    pool.close().await;
}
