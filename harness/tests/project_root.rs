//! Paths follow the project, not the current directory (issue 16, friction 3): a scenario run
//! from elsewhere writes its goldens, receipts and reports into its own project; `bless` works
//! from any directory inside the project; `--root` overrides.

mod common;
use common::{harness, text};

const MINE: &str =
    "model:\n  preset: tiny\ninputs:\n  tokens: [[9, 99, 199]]\nreference: none\nthreads: 1\n";

#[test]
fn a_scenario_run_from_elsewhere_writes_into_its_project() {
    let dir = tempfile::tempdir().unwrap();
    let (proj, elsewhere) = (dir.path().join("proj"), dir.path().join("elsewhere"));
    for d in ["scenarios", "goldens", "my"] {
        std::fs::create_dir_all(proj.join(d)).unwrap();
    }
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A scenario outside `scenarios/`, in a project that has `scenarios/` and `goldens/`.
    let mine = proj.join("my/mine.yaml");
    std::fs::write(&mine, MINE).unwrap();

    let out = harness(&elsewhere, &["run", mine.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing golden"), "{}", text(&out));
    assert!(proj.join("goldens/mine.snap.new").exists());
    assert!(proj.join("target/harness/report.json").exists());
    assert!(proj.join("receipts/mine.json").exists());
    let receipt = std::fs::read_to_string(proj.join("receipts/mine.json")).unwrap();
    assert!(
        receipt.contains("\"scenario_file\": \"my/mine.yaml\""),
        "{receipt}"
    );
    for d in ["goldens", "receipts", "target"] {
        assert!(
            !elsewhere.join(d).exists(),
            "`{d}` made in the current directory"
        );
    }

    // bless from a subdirectory of the project finds it (the scenario is named by `--dir`,
    // the project by the current directory).
    let out = harness(&proj.join("my"), &["bless", "--dir", ".", "mine"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(proj.join("goldens/mine.snap").exists());
    assert!(!proj.join("my/goldens").exists());
    let out = harness(&elsewhere, &["run", mine.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // `--root` overrides (a directory that exists: one that does not is refused, not made).
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = harness(
        &elsewhere,
        &[
            "run",
            "--root",
            other.to_str().unwrap(),
            mine.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(other.join("goldens/mine.snap.new").exists());
    assert!(other.join("target/harness/report.json").exists());
    assert!(!elsewhere.join("target").exists());
}

#[test]
fn bless_by_name_works_from_any_directory_inside_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path();
    for d in ["scenarios", "goldens", "deep/down"] {
        std::fs::create_dir_all(proj.join(d)).unwrap();
    }
    std::fs::write(proj.join("scenarios/mine.yaml"), MINE).unwrap();
    let out = harness(&proj.join("deep/down"), &["bless", "mine"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(proj.join("goldens/mine.snap").exists());
    // `run` and `list` with no path find the project's scenarios too.
    let out = harness(&proj.join("deep"), &["list"]);
    assert!(
        text(&out).contains("scenarios::mine::golden"),
        "{}",
        text(&out)
    );
    let out = harness(&proj.join("deep"), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // One scenario is "1 scenario".
    assert!(text(&out).contains(" of 1 scenario ("), "{}", text(&out));
    assert!(!proj.join("deep/target").exists());
    assert!(proj.join("target/harness/report.json").exists());
}

#[test]
fn the_root_rules() {
    use bitnet_harness::scenario::project_root;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("a/scenarios")).unwrap();
    std::fs::create_dir_all(d.join("b/goldens")).unwrap();
    std::fs::create_dir_all(d.join("b/scenarios")).unwrap();
    std::fs::create_dir_all(d.join("b/x/y")).unwrap();
    std::fs::create_dir_all(d.join("c")).unwrap();
    std::fs::write(d.join("c/Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    std::fs::create_dir_all(d.join("c/tests")).unwrap();
    std::fs::create_dir_all(d.join("lone")).unwrap();
    // A directory named `scenarios`: its parent, goldens or not.
    assert_eq!(project_root(&d.join("a/scenarios/s.yaml")), d.join("a"));
    // The nearest ancestor with `scenarios/` and `goldens/`.
    assert_eq!(project_root(&d.join("b/x/y/s.yaml")), d.join("b"));
    // A Cargo workspace.
    assert_eq!(project_root(&d.join("c/tests/s.yaml")), d.join("c"));
    // Else the scenario's own directory.
    assert_eq!(project_root(&d.join("lone/s.yaml")), d.join("lone"));
}
