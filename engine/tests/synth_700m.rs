//! The 700M-shaped preset generates in bounded memory (one tensor at a time): its own test binary,
//! so the peak resident size measured is this generation's alone. The time it takes is printed,
//! not asserted (timings belong to benchmarks: a slower or emulated CPU is not a failure).

use bitnet_engine::synth::{generate, preset};

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn the_700m_preset_generates_in_bounded_memory() {
    let spec = preset("700m").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("700m.gguf");
    let start = std::time::Instant::now();
    let mut updates = 0u64;
    generate(&spec, &path, &mut |_, _| updates += 1).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).unwrap().len();
    // 24 × 7 ternary matrices in TQ2_0 (66 bytes per 256 weights) plus the F16 embedding.
    let tq2 = 24 * (4 * 1536 * 1536 + 3 * 1536 * 4096) / 256 * 66;
    let emb = 1536 * 32002 * 2;
    assert!(size > (tq2 + emb) as u64, "{size} bytes");
    assert!(updates > 100, "{updates} progress calls");
    let peak = peak_rss();
    eprintln!(
        "700m: {:.1} MB in {secs:.2} s, peak RSS {:?} MB",
        size as f64 / 1e6,
        peak.map(|p| p / 1_000_000)
    );
    if let Some(p) = peak {
        // The largest tensor (the F16 embedding, 98 MB) and one ternary matrix in f32 (25 MB)
        // at a time, not the 273 MB file.
        assert!(p < 250_000_000, "peak RSS {} MB", p / 1_000_000);
    }
}
