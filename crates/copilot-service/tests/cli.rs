//! The `copilot-service` command line, run as a process: configuration
//! errors and the `migrate` subcommand.

use std::process::Command;

/// The binary with an empty environment (but for libfaketime's, so a faked
/// clock reaches it).
fn copilot_service() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_copilot-service"));
    cmd.env_clear();
    for k in ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd
}

#[test]
fn missing_configuration_names_the_variable() {
    let out = copilot_service()
        .arg("serve")
        .env("SHOPIFY_API_VERSION", "2026-10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHOPIFY_WEBHOOK_SECRET"), "{err}");
    let out = copilot_service()
        .arg("serve")
        .env("SHOPIFY_WEBHOOK_SECRET", "never-printed")
        .env("SHOPIFY_API_VERSION", "2026-13")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SHOPIFY_API_VERSION") && !err.contains("never-printed"),
        "{err}"
    );
}

#[test]
fn migrate_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let run = |args: &[&str]| {
        copilot_service()
            .env("DATABASE_URL", &db)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["migrate", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0001 0001_update_records"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pending"));
    let out = run(&["migrate", "up"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    let out = run(&["migrate", "down", "--steps", "2"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reverted 6\nreverted 5\n"
    );
    let out = run(&["migrate", "status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.matches(" applied").count(), 4, "{text}");
    assert_eq!(text.matches("pending").count(), 2, "{text}");
    let out = copilot_service()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .args(["migrate", "up"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
