//! Ten processes race for one arena: exactly one wins, the others exit 4
//! naming the holder and the reason. On SQLite and on PostgreSQL.

use std::process::Output;

use crate::common::{Project, TestDatabase, stderr};

fn race(p: &Project) {
    // Create the ledger first so the race is about the lock, then start ten
    // processes at once.
    p.copilot(["status", "production"]).assert().success();
    let children: Vec<_> = (0..10)
        .map(|i| {
            p.spawn(
                ["lock", "production", "--reason", &format!("racer {i}")],
                &[("COPILOT_ACTOR", &format!("racer-{i}"))],
            )
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.status.success())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one winner expected: {:?}",
        outputs
            .iter()
            .map(|o| (o.status.code(), stderr(o)))
            .collect::<Vec<_>>()
    );
    let w = winners[0];
    for (i, o) in outputs.iter().enumerate() {
        if i == w {
            continue;
        }
        assert_eq!(o.status.code(), Some(4), "loser {i}: {}", stderr(o));
        let err = stderr(o);
        assert!(
            err.contains(&format!("locked by racer-{w}")) && err.contains(&format!("racer {w}")),
            "loser {i} does not name the holder: {err}"
        );
    }
}

#[test]
fn ten_processes_one_winner_sqlite() {
    race(&Project::init());
}

#[tokio::test]
async fn ten_processes_one_winner_postgres() {
    let db = TestDatabase::create().await;
    let p = Project::init_with_ledger(&db.url);
    tokio::task::spawn_blocking(move || race(&p)).await.unwrap();
}
