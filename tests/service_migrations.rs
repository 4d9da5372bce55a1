//! The service's migrations: every down is tested; up, down to zero and up
//! again gives the same schema, on SQLite and PostgreSQL.

use copilot_db::Pool;
use copilot_service::migrate;

use crate::common::TestDatabase;

async fn round_trip(pool: &Pool) {
    let applied = migrate::up(pool).await.unwrap();
    assert_eq!(applied, [1, 2, 3, 4, 5, 6]);
    let first = migrate::schema_dump(pool).await.unwrap();
    assert!(
        first.contains("update_records")
            && first.contains("webhook_deliveries")
            && first.contains("feature_flags")
            && first.contains("shops")
            && first.contains("revisions")
    );
    assert!(migrate::up(pool).await.unwrap().is_empty(), "idempotent");

    // One step at a time, each down leaves the schema of the step before.
    let mut dumps = vec![first.clone()];
    for expect in [6, 5, 4, 3, 2, 1] {
        let reverted = migrate::down(pool, 1).await.unwrap();
        assert_eq!(reverted, [expect]);
        dumps.push(migrate::schema_dump(pool).await.unwrap());
    }
    assert_eq!(dumps.last().unwrap(), "", "down to zero leaves no tables");
    assert!(migrate::down(pool, 1).await.unwrap().is_empty());

    assert_eq!(migrate::up(pool).await.unwrap(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        migrate::schema_dump(pool).await.unwrap(),
        first,
        "up again gives the same schema"
    );
    let reverted = migrate::down(pool, 10).await.unwrap();
    assert_eq!(reverted, [6, 5, 4, 3, 2, 1]);
    assert_eq!(migrate::up(pool).await.unwrap(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(migrate::schema_dump(pool).await.unwrap(), first);
    let status = migrate::status(pool).await.unwrap();
    assert!(status.iter().all(|m| m.applied && !m.changed));
}

#[tokio::test]
async fn sqlite_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        2,
    )
    .await
    .unwrap();
    round_trip(&pool).await;
}

#[tokio::test]
async fn postgres_round_trip() {
    let db = TestDatabase::create().await;
    let pool = Pool::connect(&db.url, 2).await.unwrap();
    round_trip(&pool).await;
    pool.close().await;
}
