//! The ledger's behaviour, run identically against SQLite and PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use copilot_ledger::*;
use serde_json::json;

use crate::common::TestDatabase;

/// Define one test per backend from one async body taking a `Ledger`.
macro_rules! on_both_backends {
    ($name:ident, |$ledger:ident| $body:block) => {
        mod $name {
            use super::*;

            async fn body($ledger: Ledger) $body

            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
                body(Ledger::connect(&url).await.unwrap()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let db = TestDatabase::create().await;
                let ledger = Ledger::connect(&db.url).await.unwrap();
                assert_eq!(ledger.backend(), Backend::Postgres);
                body(ledger.clone()).await;
                ledger.close().await;
            }
        }
    };
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn release(version: &str) -> NewRelease {
    NewRelease {
        env: Default::default(),
        migrations: (version == "v1").then(|| {
            vec![MigrationRecord {
                version: 20261101000000,
                description: "add shops".into(),
                reversible: false,
                checksum: "ab12".into(),
            }]
        }),
        version: version.into(),
        image: format!("ghcr.io/acme/copilot-service:{version}"),
        digest: None,
        git_sha: Some("0a1b2c3".into()),
        config_hash: "sha256:00".into(),
        created_by: "tester".into(),
    }
}

on_both_backends!(releases_are_found_by_id_version_and_image, |ledger| {
    let now = t("2026-11-24T10:00:00Z");
    let v1 = ledger.create_release(&release("v1"), now).await.unwrap();
    let v2 = ledger
        .create_release(&release("v2"), now + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(v1.created_at, now);
    assert_eq!(ledger.find_release("v1").await.unwrap().id, v1.id);
    assert_eq!(ledger.find_release(&v2.id).await.unwrap().version, "v2");
    // The migration set round-trips; a release without one reads back as none.
    let set = ledger
        .find_release("v1")
        .await
        .unwrap()
        .migrations
        .unwrap()
        .0;
    assert_eq!((set[0].version, set[0].reversible), (20261101000000, false));
    assert!(v2.migrations.is_none());
    assert_eq!(ledger.find_release(&v2.image).await.unwrap().id, v2.id);
    assert!(matches!(
        ledger.find_release("v3").await,
        Err(LedgerError::ReleaseNotFound(_))
    ));
    assert!(matches!(
        ledger.create_release(&release("v1"), now).await,
        Err(LedgerError::ReleaseExists(_))
    ));
    let list = ledger.list_releases(10).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(),
        ["v2", "v1"]
    );
});

on_both_backends!(deployments_steps_and_traffic, |ledger| {
    let t0 = t("2026-11-24T10:00:00Z");
    let v1 = ledger.create_release(&release("v1"), t0).await.unwrap();
    let d = ledger
        .create_deployment(
            &NewDeployment {
                arena: "production".into(),
                release_id: v1.id.clone(),
                previous_release_id: None,
                kind: "promote".into(),
                strategy: "blue-green".into(),
                source_arena: Some("canary".into()),
                reason: None,
                created_by: "tester".into(),
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(d.state, "running");
    assert_eq!(
        ledger
            .active_deployment("production")
            .await
            .unwrap()
            .unwrap()
            .deployment
            .id,
        d.id
    );
    assert!(ledger.live("production").await.unwrap().is_none());

    let s1 = ledger
        .start_step(&d.id, "deploy-idle", &json!({"colour": "green"}), t0)
        .await
        .unwrap();
    let s2 = ledger
        .start_step(&d.id, "shift", &json!({"weight": 10}), t0)
        .await
        .unwrap();
    assert_eq!((s1.seq, s2.seq), (1, 2));
    ledger
        .finish_step(&d.id, 1, "done", &json!({"healthy": true}), t0)
        .await
        .unwrap();
    let steps = ledger.steps(&d.id).await.unwrap();
    assert_eq!(steps[0].state, "done");
    assert_eq!(steps[0].outcome.as_ref().unwrap().0["healthy"], true);
    assert_eq!(steps[1].state, "started");

    let split =
        json!({"blue": {"release": "v0", "weight": 90}, "green": {"release": "v1", "weight": 10}});
    ledger
        .set_traffic("production", &split, Some(&d.id), t0)
        .await
        .unwrap();
    assert_eq!(
        ledger.traffic("production").await.unwrap().unwrap().split.0,
        split
    );

    let t1 = t0 + chrono::Duration::minutes(30);
    ledger
        .set_deployment_state(&d.id, "succeeded", t1)
        .await
        .unwrap();
    let live = ledger.live("production").await.unwrap().unwrap();
    assert_eq!(live.version, "v1");
    assert_eq!(live.deployment.finished_at, Some(t1));
    assert!(
        ledger
            .active_deployment("production")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        ledger.history(Some("production"), 10).await.unwrap().len(),
        1
    );
    assert_eq!(ledger.history(Some("canary"), 10).await.unwrap().len(), 0);
    assert_eq!(ledger.history(None, 10).await.unwrap().len(), 1);
});

on_both_backends!(gate_runs_keep_their_evidence, |ledger| {
    let t0 = t("2026-11-24T10:00:00Z");
    let run = GateRun {
        id: "gr_1".into(),
        arena: "canary".into(),
        release_id: None,
        deployment_id: None,
        phase: "before".into(),
        outcome: "fail".into(),
        started_at: t0,
        finished_at: t0 + chrono::Duration::seconds(3),
    };
    let results = vec![
        GateResult {
            gate: "queue-health".into(),
            kind: "queue-health".into(),
            outcome: "fail".into(),
            summary: "failure rate 4.2% > 1%".into(),
            evidence: sqlx::types::Json(
                json!({"failed": 42, "completed": 958, "threshold": 0.01, "source": "redis bull:webhooks"}),
            ),
            started_at: t0,
            duration_ms: 812,
        },
        GateResult {
            gate: "window".into(),
            kind: "window".into(),
            outcome: "pass".into(),
            summary: "inside Tue-Thu 10:00-14:00".into(),
            evidence: sqlx::types::Json(json!({})),
            started_at: t0,
            duration_ms: 1,
        },
    ];
    ledger.record_gate_run(&run, &results).await.unwrap();
    let runs = ledger.gate_runs(Some("canary"), None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "fail");
    let back = ledger.gate_results("gr_1").await.unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].gate, "queue-health");
    assert_eq!(back[0].evidence.0["failed"], 42);
    assert_eq!(back[0].duration_ms, 812);
});

on_both_backends!(approvals_and_append_only_audit_log, |ledger| {
    let t0 = t("2026-11-24T10:00:00Z");
    let v1 = ledger.create_release(&release("v1"), t0).await.unwrap();
    ledger
        .approve("production", &v1.id, "alice", Some("QA ok"), t0)
        .await
        .unwrap();
    ledger
        .approve("production", &v1.id, "bob", None, t0)
        .await
        .unwrap();
    assert_eq!(
        ledger.approvals("production", &v1.id).await.unwrap().len(),
        2
    );
    assert_eq!(ledger.approvals("canary", &v1.id).await.unwrap().len(), 0);

    ledger
        .audit(
            &NewAudit {
                actor: "alice".into(),
                action: "lock".into(),
                arena: Some("production".into()),
                reason: Some("incident".into()),
                ..NewAudit::default()
            },
            t0,
        )
        .await
        .unwrap();
    ledger
        .audit(
            &NewAudit {
                actor: "bob".into(),
                action: "unlock".into(),
                arena: Some("production".into()),
                detail: json!({"forced": false}),
                ..NewAudit::default()
            },
            t0,
        )
        .await
        .unwrap();
    let log = ledger.audit_log(Some("production"), 10).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["unlock", "lock"]
    );
    assert_eq!(log[1].reason.as_deref(), Some("incident"));
    // The database itself refuses to rewrite history.
    let err = ledger.tamper_with_audit_log().await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(
        ledger.audit_log(None, 10).await.unwrap()[1]
            .reason
            .as_deref(),
        Some("incident")
    );
});

on_both_backends!(leases_are_taken_over_only_after_expiry, |ledger| {
    let t0 = t("2026-11-24T10:00:00Z");
    let ms = chrono::Duration::milliseconds;
    let a = LockRequest::here(
        "canary",
        LockKind::Lease,
        "alice",
        "promote v1",
        Some(Duration::from_secs(60)),
    );
    let b = LockRequest {
        owner: "bob".into(),
        reason: "promote v2".into(),
        ..a.clone()
    };

    let held = ledger.acquire_lock(&a, t0).await.unwrap();
    assert_eq!(held.owner, "alice");
    match ledger.acquire_lock(&b, t0 + ms(59_000)).await {
        Err(LedgerError::LockHeld(l)) => {
            assert_eq!(l.owner, "alice");
            assert_eq!(l.reason, "promote v1");
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    // Renewed at +30s: still alice's at +80s.
    assert!(
        ledger
            .renew_lock(
                "canary",
                &held.token,
                Duration::from_secs(60),
                t0 + ms(30_000)
            )
            .await
            .unwrap()
    );
    assert!(ledger.acquire_lock(&b, t0 + ms(80_000)).await.is_err());
    // Expired at +90s: bob takes it over, and alice can no longer renew or release it.
    let taken = ledger.acquire_lock(&b, t0 + ms(90_001)).await.unwrap();
    assert_eq!(taken.owner, "bob");
    assert!(
        !ledger
            .renew_lock(
                "canary",
                &held.token,
                Duration::from_secs(60),
                t0 + ms(90_002)
            )
            .await
            .unwrap()
    );
    assert!(!ledger.release_lock("canary", &held.token).await.unwrap());
    assert_eq!(
        ledger
            .current_lock("canary", t0 + ms(90_003))
            .await
            .unwrap()
            .unwrap()
            .owner,
        "bob"
    );
    assert!(ledger.release_lock("canary", &taken.token).await.unwrap());
    assert!(ledger.current_lock("canary", t0).await.unwrap().is_none());
});

on_both_backends!(manual_locks_never_expire_and_leases_need_force, |ledger| {
    let t0 = t("2026-11-24T10:00:00Z");
    let far = t0 + chrono::Duration::days(365);
    let manual = LockRequest::here("production", LockKind::Manual, "alice", "incident 7", None);
    ledger.acquire_lock(&manual, t0).await.unwrap();
    let lease = LockRequest::here(
        "production",
        LockKind::Lease,
        "bot",
        "promote",
        Some(Duration::from_secs(60)),
    );
    assert!(matches!(
        ledger.acquire_lock(&lease, far).await,
        Err(LedgerError::LockHeld(_))
    ));
    let removed = ledger.unlock("production", false, far).await.unwrap();
    assert_eq!(removed.reason, "incident 7");
    assert!(matches!(
        ledger.unlock("production", false, far).await,
        Err(LedgerError::NotLocked(_))
    ));

    ledger.acquire_lock(&lease, far).await.unwrap();
    assert!(matches!(
        ledger.unlock("production", false, far).await,
        Err(LedgerError::LockInUse { .. })
    ));
    ledger.unlock("production", true, far).await.unwrap();
    assert!(ledger.locks(far).await.unwrap().is_empty());
});

on_both_backends!(a_held_lease_is_renewed_in_the_background, |ledger| {
    let req = LockRequest::here(
        "staging",
        LockKind::Lease,
        "alice",
        "promote",
        Some(Duration::from_millis(1500)),
    );
    let lease = ledger.hold_lease(&req, Utc::now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // Twice the TTL later, the renewer has kept it alive.
    let other = LockRequest {
        owner: "bob".into(),
        ..req.clone()
    };
    assert!(matches!(
        ledger.acquire_lock(&other, Utc::now()).await,
        Err(LedgerError::LockHeld(_))
    ));
    assert!(!lease.is_lost());
    assert!(lease.release().await.unwrap());
    ledger.acquire_lock(&other, Utc::now()).await.unwrap();
});

on_both_backends!(
    history_and_live_follow_the_order_deployments_were_recorded,
    |ledger| {
        // A hotfix run with a clock pinned to the past (or on a machine whose
        // clock lags) is still what happened last.
        let today = t("2026-12-02T09:00:00Z");
        let black_friday = t("2026-11-27T11:00:00Z");
        let v1 = ledger.create_release(&release("v1"), today).await.unwrap();
        let v2 = ledger.create_release(&release("v2"), today).await.unwrap();
        let mut ids = Vec::new();
        for (release, kind, at) in [(&v1, "promote", today), (&v2, "hotfix", black_friday)] {
            let d = ledger
                .create_deployment(
                    &NewDeployment {
                        arena: "stage".into(),
                        release_id: release.id.clone(),
                        previous_release_id: None,
                        kind: kind.into(),
                        strategy: "blue-green".into(),
                        source_arena: None,
                        reason: None,
                        created_by: "tester".into(),
                    },
                    at,
                )
                .await
                .unwrap();
            ledger
                .set_deployment_state(&d.id, "succeeded", at)
                .await
                .unwrap();
            ids.push(d.id);
        }
        let history = ledger.history(Some("stage"), 10).await.unwrap();
        let kinds: Vec<&str> = history.iter().map(|d| d.deployment.kind.as_str()).collect();
        assert_eq!(kinds, ["hotfix", "promote"]);
        assert_eq!(ledger.live("stage").await.unwrap().unwrap().version, "v2");
        assert_eq!(history[0].deployment.id, ids[1]);
    }
);

on_both_backends!(incidents_keep_their_fields_updates_and_evidence, |ledger| {
    let opened = ledger
        .open_incident(
            &NewIncident {
                arena: "stage".into(),
                severity: 2,
                status: "investigating".into(),
                impact: "checkout broken".into(),
                source: "manual".into(),
                release_id: None,
                deployment_id: None,
                started_at: t("2026-03-10T09:58:00Z"),
                detected_at: t("2026-03-10T10:00:00Z"),
                decision_due_at: Some(t("2026-03-10T10:15:00Z")),
                opened_by: "oncall".into(),
                evidence: json!({ "metric": "error_rate" }),
            },
            t("2026-03-10T10:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(opened.evidence.0["metric"], "error_rate");
    assert!(opened.is_open() && opened.decided_at.is_none());
    // A rollback decides and mitigates every open incident of the arena once.
    let on = ledger
        .incident_rolled_back(
            "stage",
            "dep_1",
            t("2026-03-10T10:07:00Z"),
            t("2026-03-10T10:07:01Z"),
        )
        .await
        .unwrap();
    assert_eq!(on, std::slice::from_ref(&opened.id));
    let again = ledger
        .incident_rolled_back(
            "stage",
            "dep_2",
            t("2026-03-10T10:08:00Z"),
            t("2026-03-10T10:08:01Z"),
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    let updated = ledger
        .update_incident(
            &opened.id,
            &IncidentChange {
                eta: Some("11:00".into()),
                ..IncidentChange::default()
            },
            "oncall",
            t("2026-03-10T10:09:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(updated.eta.as_deref(), Some("11:00"));
    assert_eq!(updated.status, "investigating", "kept");
    assert_eq!(updated.rollback_deployment_id.as_deref(), Some("dep_1"));
    assert_eq!(updated.decided_at, Some(t("2026-03-10T10:07:00Z")));
    let resolved = ledger
        .update_incident(
            &opened.id,
            &IncidentChange {
                status: Some("resolved".into()),
                ..IncidentChange::default()
            },
            "oncall",
            t("2026-03-10T10:30:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(resolved.resolved_at, Some(t("2026-03-10T10:30:00Z")));
    assert_eq!(resolved.eta.as_deref(), Some("11:00"));
    assert!(
        ledger
            .incidents(Some("stage"), false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ledger.incidents(None, true).await.unwrap().len(), 1);
    let updates = ledger.incident_updates(&opened.id).await.unwrap();
    let statuses: Vec<&str> = updates.iter().map(|u| u.status.as_str()).collect();
    assert_eq!(statuses, ["investigating", "investigating", "resolved"]);
    assert!(matches!(
        ledger.incident("inc_nope").await,
        Err(LedgerError::IncidentNotFound(_))
    ));
    // A preview's settings read back as JSON on both backends.
    ledger
        .upsert_preview(
            &NewPreview {
                name: "preview-pr-7".into(),
                arena: "preview".into(),
                pr: 7,
                platform_name: "copilot-pr-7".into(),
                settings: json!({ "port": 7411 }),
                created_by: "ci".into(),
                expires_at: t("2026-03-13T10:00:00Z"),
            },
            t("2026-03-10T10:00:00Z"),
        )
        .await
        .unwrap();
    let p = ledger.preview("preview-pr-7").await.unwrap().unwrap();
    assert_eq!(p.settings.0["port"], 7411);
});
