//! Bad input is reported before anything runs, as one error per bad file with its
//! file:line:col, and exit code 2 (issue 16, friction 8).

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn an_out_of_vocabulary_token_is_one_usage_error_before_any_check_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scenarios")).unwrap();
    std::fs::write(
        dir.path().join("scenarios/oov.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 9999]]\nreference: none\n",
    )
    .unwrap();
    let out = harness()
        .arg("run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("scenarios/oov.yaml:4:16: token id `9999`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stdout.contains("[1/"), "no check may run: {stdout}");
}

#[test]
fn every_bad_file_of_a_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("scenarios");
    std::fs::create_dir(&s).unwrap();
    let good = "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2]]\n";
    std::fs::write(s.join("a_good.yaml"), good).unwrap();
    std::fs::write(s.join("b_typo.yaml"), format!("{good}thread: 1\n")).unwrap();
    std::fs::write(s.join("c_oov.yaml"), good.replace("2]]", "512]]")).unwrap();
    for cmd in ["list", "run"] {
        let out = harness()
            .args([cmd, "scenarios"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("b_typo.yaml:5:1: unknown field `thread`"),
            "{cmd}: {stderr}"
        );
        assert!(
            stderr.contains("c_oov.yaml:4:16: token id `512`"),
            "{cmd}: {stderr}"
        );
        assert!(
            stderr.contains("2 of 3 scenario files are invalid"),
            "{cmd}: {stderr}"
        );
        assert!(!dir.path().join("target/harness/report.json").exists());
    }
}

/// Runs `harness args` in `dir`, failing the test (not hanging it) when the command outlives a
/// minute: the cases below used to run until killed, or to abort on an allocation they sized.
fn refused(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = harness()
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`harness {}` still running after 60 s", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn counts_out_of_range_on_the_command_line_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness()
        .args(["gen-model", "--preset", "tiny", "--output", "t.gguf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let huge = u64::MAX.to_string();
    let ids = |n: usize| {
        (0..n)
            .map(|i| (i % 500).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (ids600, ids510) = (ids(600), ids(510));
    // (arguments, exit code, what stderr must say); the tiny preset's context is 512 tokens.
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec![
                "trace",
                "t.gguf",
                "--tokens",
                "1",
                "--generate",
                &huge,
                "-o",
                "tr",
            ],
            2,
            format!("`--generate` is {huge}, at most 4096"),
        ),
        (
            vec![
                "trace",
                "t.gguf",
                "--tokens",
                "1",
                "--threads",
                "100000",
                "-o",
                "tr",
            ],
            2,
            "`--threads` is 100000, expected 1 to 256".into(),
        ),
        (
            vec![
                "ref-trace",
                "t.gguf",
                "--tokens",
                "1",
                "--threads",
                "0",
                "-o",
                "tr",
            ],
            2,
            "`--threads` is 0, expected 1 to 256".into(),
        ),
        (
            vec![
                "ref-trace",
                "t.gguf",
                "--tokens",
                "1",
                "--generate",
                "4097",
                "-o",
                "tr",
            ],
            2,
            "`--generate` is 4097, at most 4096".into(),
        ),
        (
            vec!["bench", "--preset", "tiny", "--decode-tokens", "0"],
            2,
            "--decode-tokens must be at least 1".into(),
        ),
        (
            vec!["bench", "--preset", "tiny", "--threads", "1,100000"],
            2,
            "give thread counts from 1 to 256".into(),
        ),
        (
            vec!["bench", "--preset", "tiny", "--threads", "2,1,2"],
            2,
            "--threads: 2 is given twice (entries 1 and 3)".into(),
        ),
        (
            vec!["bench", "--preset", "tiny", "--decode-tokens", &huge],
            1,
            format!("--prompt-tokens 128 + --decode-tokens {huge} exceed the context"),
        ),
        (
            vec![
                "bench",
                "--preset",
                "tiny",
                "--prompt-tokens",
                "500",
                "--decode-tokens",
                "13",
            ],
            1,
            "(`context_length` 512 tokens)".into(),
        ),
        (
            vec!["ref-bench", "t.gguf", "--prompt-tokens", "100000000"],
            2,
            "--prompt-tokens 100000000 + --decode-tokens 64 exceed the context of `t.gguf`".into(),
        ),
        (
            vec!["ref-bench", "t.gguf", "--decode-tokens", "0"],
            2,
            "--decode-tokens must be at least 1".into(),
        ),
        (
            vec!["trace", "t.gguf", "--tokens", &ids600, "-o", "tr"],
            2,
            "600 prompt tokens and `--generate` 0: 600 positions, more than the context of `t.gguf` (`context_length` 512)".into(),
        ),
        (
            vec![
                "ref-trace",
                "t.gguf",
                "--tokens",
                &ids510,
                "--generate",
                "3",
                "-o",
                "tr",
            ],
            2,
            "510 prompt tokens and `--generate` 3: 513 positions, more than the context".into(),
        ),
        (
            vec!["run", "--jobs", "0"],
            2,
            "`--jobs` is 0, expected 1 to 256".into(),
        ),
        (
            vec!["run", "--jobs", "100000"],
            2,
            "`--jobs` is 100000, expected 1 to 256".into(),
        ),
    ];
    for (args, code, says) in cases {
        let (got, stderr) = refused(dir.path(), &args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("tr").exists(), "no trace may be written");
}

#[test]
fn named_pipes_and_devices_as_input_files_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A trace directory whose tensor file is a pipe, and a scenario that is one.
    let out = harness()
        .args(["gen-model", "--preset", "tiny", "--output", "t.gguf"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = harness()
        .args([
            "trace",
            "t.gguf",
            "--tokens",
            "1,2",
            "--points",
            "embeddings",
            "-o",
            "A",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::create_dir(d.join("B")).unwrap();
    std::fs::copy(d.join("A/trace.jsonl"), d.join("B/trace.jsonl")).unwrap();
    std::os::unix::fs::symlink(&fifo, d.join("B/embeddings.step0.npy")).unwrap();
    std::fs::create_dir(d.join("scenarios")).unwrap();
    std::os::unix::fs::symlink(&fifo, d.join("scenarios/s.yaml")).unwrap();
    for input in ["pipe", "/dev/zero"] {
        let cases: Vec<Vec<&str>> = vec![
            vec!["inspect", input],
            vec!["trace", input, "--tokens", "1", "-o", "out"],
            vec!["verify-receipt", input],
            vec!["report", input],
            vec!["gen-model", "--spec", input, "--output", "x.gguf"],
            vec!["perf-gate", "--bench", input, "--baseline", input],
            vec!["bench", input, "--threads", "1"],
        ];
        for args in cases {
            let (code, stderr) = refused(d, &args);
            assert!(code.is_some_and(|c| c != 0), "{args:?}: {stderr}");
            assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
        }
    }
    let (code, stderr) = refused(d, &["diff", "A", "B"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "B/embeddings.step0.npy` is not an f32 .npy file: not a regular file: a named pipe"
        ),
        "{stderr}"
    );
    let (code, stderr) = refused(d, &["list", "scenarios"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not a regular file: a named pipe"),
        "{stderr}"
    );
}

/// A scenario of 1.2 MB whose alias names a 1 MB prompt 3000 times expanded to 3 GB in the
/// parser; it is refused before, within a small memory limit, naming the file.
#[test]
fn a_yaml_alias_bomb_is_refused_without_the_memory_it_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("scenarios")).unwrap();
    let big = "y".repeat(1 << 20);
    let yaml = format!(
        "model:\n  preset: tiny\ninputs:\n  prompts: [&big '{big}', {}]\n",
        vec!["*big"; 3000].join(", ")
    );
    std::fs::write(d.join("scenarios/bomb.yaml"), yaml).unwrap();
    // 1 GiB of address space: the expansion alone would need three.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec '{}' list scenarios/bomb.yaml",
            env!("CARGO_BIN_EXE_harness")
        ))
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bomb.yaml") && stderr.contains("the document expands to more than"),
        "{stderr}"
    );
}

#[test]
fn a_decode_floor_that_is_not_a_positive_number_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["nan", "-1", "0", "inf"] {
        let arg = format!("--min-decode-tps={v}");
        let (code, stderr) = refused(dir.path(), &["verify-receipt", "r.json", &arg]);
        assert_eq!(code, Some(2), "{v}: {stderr}");
        assert!(
            stderr.contains("expected a positive number of tokens/s"),
            "{v}: {stderr}"
        );
    }
}

/// Metadata llama.cpp would run differently (RoPE scaling, another head size) is refused by the
/// engine, naming the key, rather than run otherwise than the reference.
#[test]
fn rope_scaling_and_other_head_sizes_are_refused() {
    use bitnet_engine::gguf::Value;
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "bitnet.rope.scaling.type",
            Value::String("yarn".into()),
            "no RoPE scaling",
        ),
        (
            "bitnet.rope.scaling.factor",
            Value::F32(8.0),
            "no RoPE scaling",
        ),
        (
            "bitnet.attention.key_length",
            Value::U32(32),
            "the head size n_embd / n_head = 64",
        ),
    ];
    for (key, value, says) in cases {
        let mut w =
            bitnet_engine::synth::build(&bitnet_engine::synth::preset("tiny").unwrap()).unwrap();
        w.add_kv(key, value);
        w.write(&dir.path().join("m.gguf")).unwrap();
        let (code, stderr) = refused(dir.path(), &["trace", "m.gguf", "--tokens", "1", "-o", "t"]);
        assert_eq!(code, Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(says),
            "{key}: {stderr}"
        );
    }
    // The values that change nothing still load.
    let mut w =
        bitnet_engine::synth::build(&bitnet_engine::synth::preset("tiny").unwrap()).unwrap();
    w.add_kv("bitnet.rope.scaling.type", Value::String("linear".into()));
    w.add_kv("bitnet.rope.scaling.factor", Value::F32(1.0));
    w.add_kv("bitnet.attention.key_length", Value::U32(64));
    w.write(&dir.path().join("m.gguf")).unwrap();
    let (code, stderr) = refused(dir.path(), &["trace", "m.gguf", "--tokens", "1", "-o", "t"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// An output path that cannot be written is named, with the flag, before the work it would hold
/// (`run --out` onto a file ran every check first and then printed "File exists").
#[test]
fn output_paths_that_cannot_be_written_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("scenarios")).unwrap();
    std::fs::write(
        d.join("scenarios/s.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2]]\nreference: none\n",
    )
    .unwrap();
    std::fs::write(d.join("taken"), "a file").unwrap();
    for flag in ["--out", "--receipts"] {
        let (code, stderr) = refused(d, &["run", flag, "taken"]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "`{flag}` `taken` cannot be a directory to write to"
            )),
            "{flag}: {stderr}"
        );
    }
    assert!(!d.join("target/harness/runs/s").exists(), "nothing ran");
    let out = harness()
        .args(["gen-model", "--preset", "tiny", "--output", "t.gguf"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = harness()
        .args(["trace", "t.gguf", "--tokens", "1,2", "-o", "A"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, stderr) = refused(d, &["diff", "A", "A", "--html", "A"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot write `--html` `A`"), "{stderr}");
    // A model written into a directory that does not exist: the file and the missing directory
    // are each named once, not the temporary file the write would have made there.
    let (code, stderr) = refused(
        d,
        &["gen-model", "--preset", "tiny", "-o", "no/such/m.gguf"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "writing `no/such/m.gguf`: the directory `no/such` does not exist: create it first"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("writing").count(), 1, "{stderr}");
    assert!(!stderr.contains(".tmp"), "{stderr}");
}
