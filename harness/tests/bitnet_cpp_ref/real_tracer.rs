//! The real tracer against upstream llama.cpp: the dump tool compiles against the headers
//! `llama-cpp-sys-2` ships, and linked to its static libraries it equals `harness ref-trace`.

use super::*;

/// The llama.cpp source `llama-cpp-sys-2` ships, from cargo's registry.
fn llama_cpp_source() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let registry = home.join("registry/src");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&registry)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("llama-cpp-sys-2-0.1.161/llama.cpp"))
        .filter(|p| p.join("include/llama.h").exists() && p.join("ggml/include/ggml.h").exists())
        .collect();
    found.sort();
    found.pop()
}

fn compiler() -> Option<String> {
    ["c++", "g++", "clang++"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

#[test]
fn dump_tool_compiles_against_llama_cpp_headers() {
    let test = "dump_tool_compiles_against_llama_cpp_headers";
    let (Some(src), Some(cxx)) = (llama_cpp_source(), compiler()) else {
        eprintln!("{test}: skipped: no C++ compiler, or no llama-cpp-sys-2 0.1.161 source in cargo's registry");
        return;
    };
    let o = Command::new(&cxx)
        .args(["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", src.join("include").display()))
        .arg(format!("-I{}", src.join("ggml/include").display()))
        .arg(root().join("ci/refs/bitnet_cpp_dump.cpp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The static libraries `llama-cpp-sys-2` built for this profile (the newest, if several).
fn llama_cpp_static_libs() -> Option<PathBuf> {
    let profile = Path::new(env!("CARGO_BIN_EXE_harness")).parent()?;
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(profile.join("build"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("llama-cpp-sys-2-")
        })
        .map(|e| e.path().join("out/lib"))
        .filter_map(|lib| {
            let t = std::fs::metadata(lib.join("libllama.a"))
                .ok()?
                .modified()
                .ok()?;
            ["libggml.a", "libggml-cpu.a", "libggml-base.a"]
                .iter()
                .all(|f| lib.join(f).exists())
                .then_some((t, lib))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

#[test]
fn dump_tool_linked_to_llama_cpp_equals_ref_trace() {
    let test = "dump_tool_linked_to_llama_cpp_equals_ref_trace";
    let (Some(src), Some(_), Some(libs)) =
        (llama_cpp_source(), compiler(), llama_cpp_static_libs())
    else {
        eprintln!("{test}: skipped: no C++ compiler, llama.cpp source or llama-cpp-sys-2 static libraries");
        return;
    };
    if python(test).is_none() {
        return;
    }
    // A checkout laid out as BitNet's (headers under 3rdparty/llama.cpp) whose build holds the
    // static libraries; kept under the target directory so the compiled tracer is reused.
    let ck = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bitnet-cpp-ref-upstream");
    let _ = std::fs::remove_dir_all(ck.join("3rdparty"));
    let _ = std::fs::remove_dir_all(ck.join("build/lib"));
    std::fs::create_dir_all(ck.join("3rdparty/llama.cpp/ggml")).unwrap();
    std::fs::create_dir_all(ck.join("build/lib")).unwrap();
    let link = std::os::unix::fs::symlink;
    link(src.join("include"), ck.join("3rdparty/llama.cpp/include")).unwrap();
    link(
        src.join("ggml/include"),
        ck.join("3rdparty/llama.cpp/ggml/include"),
    )
    .unwrap();
    for f in ["libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a"] {
        link(libs.join(f), ck.join("build/lib").join(f)).unwrap();
    }
    let build = ck.join("build").display().to_string();

    let dir = tempfile::tempdir().unwrap();
    let spec = bitnet_engine::synth::preset("tiny").expect("the `tiny` preset");
    let model = dir.path().join("tiny.gguf");
    bitnet_engine::synth::build(&spec)
        .unwrap()
        .write(&model)
        .unwrap();
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_harness"));
    let timeout = Duration::from_secs(300);
    for (label, ubatch, nudge) in [
        ("one-shot", None, false),
        ("ubatch 3, nudged", Some(3), true),
    ] {
        let req = |out: PathBuf| RefRequest {
            model: model.clone(),
            tokens: vec![1, 17, 300, 42, 5, 99, 250, 7],
            generate: 3,
            points: PointFilter::all(),
            threads: 2,
            out,
            ubatch,
            nudge_embeddings: nudge,
            kv_cache: Default::default(),
        };
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        let _ = std::fs::remove_dir_all(&ours);
        let _ = std::fs::remove_dir_all(&theirs);
        run_command(
            &wrapper(),
            std::slice::from_ref(&build),
            &req(ours.clone()),
            timeout,
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        run_reference(&harness, &req(theirs.clone()), timeout)
            .unwrap_or_else(|e| panic!("{label}: harness ref-trace: {e}"));
        let key = |r: &TraceRecord| (r.step, r.name.clone());
        let a: BTreeMap<_, _> = read_trace(&ours.join("trace.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| (key(&r), r))
            .collect();
        let b: BTreeMap<_, _> = read_trace(&theirs.join("trace.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| (key(&r), r))
            .collect();
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{label}: the same points and steps"
        );
        for (k, r) in &a {
            let l = &b[k];
            assert_eq!(
                (&r.blake3, &r.shape, r.positions),
                (&l.blake3, &l.shape, l.positions),
                "{label}: `{}` step {}",
                k.1,
                k.0
            );
        }
        let expected = (TracePoint::all(spec.n_layer).len() - usize::from(nudge)) * 3;
        assert_eq!(a.len(), expected, "{label}: every point at every step");
        for f in ["logits.npy", "generated.json"] {
            assert_eq!(
                std::fs::read(ours.join(f)).unwrap(),
                std::fs::read(theirs.join(f)).unwrap(),
                "{label}: {f}"
            );
        }
        // The same build, read through `llama_print_system_info()`: every instruction set
        // llama.cpp reports through `ggml_cpu_has_*` is there.
        let (mine, llama) = (
            RefBuild::read(&ours).unwrap().unwrap(),
            RefBuild::read(&theirs).unwrap().unwrap(),
        );
        assert_eq!(mine.implementation, "bitnet.cpp");
        assert!(
            llama.isa.iter().all(|f| mine.isa.contains(f)),
            "{label}: {:?} lacks some of {:?}",
            mine.isa,
            llama.isa
        );
    }
}
