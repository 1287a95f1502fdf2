//! The page's receipt and bench sections: a receipt's fields, and bench figures per thread
//! count (tables, and decode and prefill bars against the bandwidth bound).

use super::*;

pub(super) fn receipt_section(h: &mut String, rec: &serde_json::Value) {
    let get = |path: &[&str]| -> String {
        let mut v = rec;
        for k in path {
            match v.get(k) {
                Some(x) => v = x,
                None => return "—".into(),
            }
        }
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "—".into(),
            serde_json::Value::Number(n) => n.as_f64().map_or(n.to_string(), |f| {
                if f.fract() == 0.0 {
                    n.to_string()
                } else {
                    format!("{f:.2}")
                }
            }),
            other => other.to_string(),
        }
    };
    h.push_str("<h3>Receipt</h3><table class=\"receipt\"><tbody>\n");
    let rows: [(&str, String); 13] = [
        ("scenario file", get(&["scenario_file"])),
        (
            "model",
            format!("{} (blake3 {})", get(&["model"]), get(&["model_blake3"])),
        ),
        (
            "engine",
            format!(
                "{} at {} (dirty: {})",
                get(&["engine", "version"]),
                get(&["engine", "git_commit"]),
                get(&["engine", "git_dirty"])
            ),
        ),
        (
            "build",
            format!(
                "{} {}",
                get(&["build", "profile"]),
                get(&["build", "target_arch"])
            ),
        ),
        ("CPU features", get(&["build", "cpu_features"])),
        (
            "backend, threads",
            format!("{}, {}", get(&["backend"]), get(&["threads"])),
        ),
        ("kernels", get(&["kernels"])),
        (
            "engine tokens/s",
            format!(
                "prefill {}, decode {}",
                get(&["throughput", "prefill_tps"]),
                get(&["throughput", "decode_tps"])
            ),
        ),
        (
            "reference tokens/s",
            format!(
                "prefill {}, decode {}",
                get(&["throughput", "reference_prefill_tps"]),
                get(&["throughput", "reference_decode_tps"])
            ),
        ),
        ("trace digest", get(&["trace_digest"])),
        ("verdicts", get(&["verdicts"])),
        ("started", get(&["started_at"])),
        ("duration, s", get(&["duration_seconds"])),
    ];
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    h.push_str("</tbody></table>\n");
    if let Some(b) = rec.get("bench").filter(|b| !b.is_null()) {
        bench_section(
            h,
            &BenchEntry {
                source: format!("receipt {}", get(&["scenario"])),
                report: b.clone(),
            },
        );
    }
    let _ = writeln!(
        h,
        "<details><summary>receipt JSON</summary><pre>{}</pre></details>",
        esc(&serde_json::to_string_pretty(rec).unwrap_or_default())
    );
}

pub(super) fn threads_label(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

pub(super) fn bench_section(h: &mut String, b: &BenchEntry) {
    let _ = writeln!(h, "<div class=\"bench\"><h3>Bench: {}</h3>", esc(&b.source));
    let report: crate::bench::BenchReport = match serde_json::from_value(b.report.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                h,
                "<p class=\"note\">not a bench report this harness reads ({}):</p><pre>{}</pre></div>",
                esc(&e.to_string()),
                esc(&serde_json::to_string_pretty(&b.report).unwrap_or_default())
            );
            return;
        }
    };
    let _ = writeln!(
        h,
        "<p>{} (blake3 {}), {} weight bytes per token; {} prompt tokens, {} decode tokens, {} rounds; engine kernel {} ({}); CPU {}; started {}.</p>",
        esc(&report.model),
        esc(&report.model_blake3),
        report.weight_bytes_per_token,
        report.prompt_tokens,
        report.decode_tokens,
        report.rounds,
        esc(&report.engine_kernel),
        esc(&report.engine_kernels.join(", ")),
        esc(&report.cpu_model),
        esc(&report.started_at)
    );
    match (&report.reference, &report.reference_unavailable) {
        (Some(r), _) => {
            let _ = writeln!(
                h,
                "<p>llama.cpp: <code>{}</code>, n_ctx {}, n_batch {}, n_ubatch {}, KV {}, flash attention {}.</p>",
                esc(&r.binary),
                r.n_ctx,
                r.n_batch,
                r.n_ubatch,
                esc(&r.kv_type),
                r.flash_attn
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(h, "<p class=\"note\">No llama.cpp run: {}</p>", esc(why));
        }
        (None, None) => h.push_str("<p class=\"note\">No llama.cpp run.</p>\n"),
    }
    h.push_str("<div class=\"wide\"><table class=\"bench-table\"><thead><tr><th>threads</th><th>bandwidth GB/s</th><th>bound decode tok/s</th><th>engine prefill tok/s</th><th>engine decode tok/s</th><th>llama.cpp prefill</th><th>llama.cpp decode</th><th>prefill ratio</th><th>decode ratio</th><th>engine share of bound</th><th>llama.cpp share</th></tr></thead><tbody>\n");
    let stats = |s: &crate::bench::Stats| {
        format!(
            "{} <small>({}–{})</small>",
            rate(s.median),
            rate(s.min),
            rate(s.max)
        )
    };
    let opt = |v: Option<f64>| v.map_or("—".to_string(), rate);
    let share = |v: f64| format!("{:.0}%", v * 100.0);
    for t in &report.results {
        let _ = writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            t.threads,
            rate(t.bandwidth_gbs),
            rate(t.bound_decode_tps),
            stats(&t.engine.prefill_tps),
            stats(&t.engine.decode_tps),
            t.llama.as_ref().map_or("—".into(), |l| stats(&l.prefill_tps)),
            t.llama.as_ref().map_or("—".into(), |l| stats(&l.decode_tps)),
            opt(t.prefill_ratio),
            opt(t.decode_ratio),
            share(t.engine_share_of_bound),
            t.llama_share_of_bound.map_or("—".into(), share)
        );
    }
    h.push_str("</tbody></table></div>\n");
    let bar = |label: &str, class: &str, s: &crate::bench::Stats| Bar {
        label: label.into(),
        class: class.into(),
        value: s.median,
        min: s.min,
        max: s.max,
    };
    let decode: Vec<BarGroup> = report
        .results
        .iter()
        .map(|t| BarGroup {
            label: threads_label(t.threads),
            bars: std::iter::once(bar("engine", "engine", &t.engine.decode_tps))
                .chain(
                    t.llama
                        .as_ref()
                        .map(|l| bar("llama.cpp", "llama", &l.decode_tps)),
                )
                .collect(),
            bound: Some(t.bound_decode_tps),
        })
        .collect();
    let prefill: Vec<BarGroup> = report
        .results
        .iter()
        .map(|t| BarGroup {
            label: threads_label(t.threads),
            bars: std::iter::once(bar("engine", "engine", &t.engine.prefill_tps))
                .chain(
                    t.llama
                        .as_ref()
                        .map(|l| bar("llama.cpp", "llama", &l.prefill_tps)),
                )
                .collect(),
            bound: None,
        })
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"legend\"><span><i class=\"engine\"></i>engine</span><span><i class=\"llama\"></i>llama.cpp</span><span><i class=\"bound\"></i>bandwidth bound (decode)</span><span>whiskers: min–max over rounds</span></p><div class=\"charts\"><figure class=\"bench-decode\">{}</figure><figure class=\"bench-prefill\">{}</figure></div></div>",
        svg::bar_chart("decode tokens/s per thread count", "threads", &decode),
        svg::bar_chart("prefill tokens/s per thread count", "threads", &prefill)
    );
}
