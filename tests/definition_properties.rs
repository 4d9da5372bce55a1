//! No input panics: property tests over the duration and window parsers and
//! over the definition loader fed mutated copies of the default project.
//! Each property runs a fixed number of generated cases, so the run is
//! bounded; a failure prints the input that broke it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};
use copilot_core::config::duration::Duration;
use copilot_core::config::window::{AllowWindow, Freeze, parse_zone};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Instants COPILOT_NOW can name (years 0000 to 9999), and chrono's own ends.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        8 => (-62_167_219_200i64..=253_402_300_799).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

/// Text shaped like a duration (digits and units, too many of either),
/// or anything at all.
fn duration_text() -> impl Strategy<Value = String> {
    let part = (
        "[0-9]{1,24}",
        prop::sample::select(vec!["ms", "s", "m", "h", "d", "y", "", "µs"]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"));
    prop_oneof![
        4 => prop::collection::vec(part, 1..4).prop_map(|p| p.concat()),
        1 => "\\PC{0,24}",
        1 => " *[0-9]{1,3}(d|h) *",
    ]
}

fn zone() -> impl Strategy<Value = FixedOffset> {
    (-14 * 3600..=14 * 3600i32).prop_map(|s| FixedOffset::east_opt(s).unwrap())
}

/// Text shaped like a deploy window or a freeze, or anything at all.
fn window_text() -> impl Strategy<Value = String> {
    let day = prop::sample::select(vec![
        "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "daily", "*", "mon-sun", "Xyz", "",
    ]);
    let days = prop_oneof![
        (day.clone(), day.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        prop::collection::vec(day, 1..4).prop_map(|d| d.join(",")),
    ];
    let time = (0u32..30, 0u32..70).prop_map(|(h, m)| format!("{h:02}:{m:02}"));
    let zone = prop::sample::select(vec![
        "", " UTC", " Z", " +02:00", " -14:00", " +15:00", " +99:99", " +2", " -", " utc+1",
    ]);
    let md = (0u32..14, 0u32..33).prop_map(|(m, d)| format!("{m:02}-{d:02}"));
    let date =
        (-1i32..10_001, 0u32..14, 0u32..33).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    prop_oneof![
        3 => (days, time.clone(), time, zone).prop_map(|(d, a, b, z)| format!("{d} {a}-{b}{z}")),
        2 => (md.clone(), md).prop_map(|(a, b)| format!("{a}..{b}")),
        2 => (date.clone(), date).prop_map(|(a, b)| format!("{a}..{b}")),
        1 => prop::sample::select(vec!["black-friday-week", "december-holidays", ".."]).prop_map(str::to_string),
        2 => "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn durations_parse_or_refuse_and_every_accepted_one_computes(text in duration_text(), t in instant()) {
        if let Ok(d) = text.parse::<Duration>() {
            prop_assert!(d <= Duration::MAX);
            // Every use the code makes of a duration: dates, timers, text.
            let _ = d.after(t);
            let _ = d.before(t);
            prop_assert!(std::time::Instant::now().checked_add(d.as_std()).is_some());
            let _ = tokio::time::Instant::now() + d.as_std();
            let _ = d.as_chrono();
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }
    }

    #[test]
    fn windows_and_freezes_parse_or_refuse_and_answer_for_any_instant(
        text in window_text(),
        z in zone(),
        t in instant(),
    ) {
        if let Ok(w) = AllowWindow::parse(&text, z) {
            let _ = w.contains(t);
        }
        if let Ok(f) = Freeze::parse(&text, z) {
            let _ = f.contains(t);
        }
        let _ = parse_zone(&text);
    }
}

/// The default project's definitions, as `copilot init` writes them.
fn default_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for sub in ["arenas", "gates"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((Path::new(sub).join(path.file_name().unwrap()), text));
        }
    }
    files.sort();
    files
}

/// Values a hand-edited definition may end up with.
fn nasty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "100000000d",
            "99999999999999999999",
            "-1",
            "1e400",
            ".nan",
            "-.inf",
            "~",
            "",
            "[",
            "{",
            "]",
            "*a",
            "&a x",
            "!!binary AAAA",
            "'",
            "\"",
            "0x1F",
            "true",
            "null",
            "3650d",
            "3651d",
            "{ weight: 101 }",
            "[{ weight: -5, bake: 1s }]",
            "Sun-Sat 23:59-00:00 +14:00",
            "12-31..01-01",
            "0000-01-01..9999-12-31",
            "env:",
            "file:/dev/null",
            "postgres://u:p@h/d",
            "\u{0}",
            "\u{202e}evil",
            "é̀",
            "a: b: c",
            "- x\n- y",
        ])
        .prop_map(str::to_string),
        "\\PC{0,30}",
        "[0-9]{1,30}(ms|s|m|h|d)",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value after the key on a line.
    Value(usize, String),
    /// Drop a line.
    Delete(usize),
    /// Insert text before a line.
    Insert(usize, String),
    /// Cut the file short.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        5 => (any::<usize>(), nasty_value()).prop_map(|(l, v)| Mutation::Value(l, v)),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => (any::<usize>(), "\\PC{0,40}").prop_map(|(l, t)| Mutation::Insert(l, t)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let n = lines.len();
    match m {
        Mutation::Value(l, v) => {
            let line = &mut lines[l % n];
            *line = match line.split_once(": ") {
                Some((key, _)) => format!("{key}: {v}"),
                None => format!("{line} {v}"),
            };
        }
        Mutation::Delete(l) => {
            lines.remove(l % n);
        }
        Mutation::Insert(l, t) => lines.insert(l % n, t.clone()),
        Mutation::Truncate(l) => lines.truncate(l % n),
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn the_loader_reports_or_accepts_mutated_definitions_without_panicking(
        mutations in prop::collection::vec((any::<usize>(), mutation()), 1..4)
    ) {
        let mut files = default_files();
        for (which, m) in &mutations {
            let i = which % files.len();
            files[i].1 = apply(&files[i].1, m);
        }
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in &files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        match copilot_core::config::load_project(dir.path(), &copilot_engine::platform::RULES, false) {
            Ok(loaded) => {
                // What the commands do with an accepted project must not panic either.
                for arena in loaded.project.arenas.values() {
                    let _ = serde_json::to_string(arena).unwrap();
                }
            }
            Err(copilot_core::config::ConfigError::Invalid { diagnostics }) => {
                prop_assert!(!diagnostics.is_empty());
                for d in &diagnostics {
                    prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                    prop_assert!(d.message.len() <= 1000, "{d}");
                    let _ = d.render();
                }
            }
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
    }
}
