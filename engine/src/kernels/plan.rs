//! Which kernel variant runs each kind of product, chosen by measurement ([`tune`]) on this CPU
//! and this model's own shapes. Every variant computes the same bits (the scalar kernels are the
//! specification), so the choice is speed alone: a CPU whose 512-bit operations are
//! double-pumped (AVX-512 on Zen 4) may decode faster on the AVX2 kernels and prefill faster on
//! the AVX-512 ones, and a feature list cannot know that.

use std::collections::BTreeMap;

use super::{Kernel, MAX_PREFETCH};
use crate::gguf::GgmlType;

// The measurement behind a plan lives in `super::tune`; its names stay reachable from here.
pub use super::tune::{
    refine_on_steps, tune, OtherWork, Timing, DECODE_STREAM_BYTES, IN_STEPS, KV_HUGE_GAIN,
    KV_PAGES_KIND, OTHER_KIND, ROUNDS,
};

/// Prompt chunks of at least this many tokens are prefill products; fewer are decode products
/// (the AVX-512 TQ2_0 kernels switch layouts there too).
pub const PREFILL_MIN_TOKENS: usize = 4;

/// A kind of product: the weight format and whether it is a decode (a few tokens: the weights
/// stream once per token) or a prefill (many tokens: the weights are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductKind {
    /// The weights' GGML type name (`TQ2_0`, `TQ1_0`, `I2_S`, `F16`, `F32`).
    pub weights: &'static str,
    pub prefill: bool,
}

impl ProductKind {
    /// The kind of a product of `ty` weights with `n_tok` tokens.
    pub fn of(ty: GgmlType, n_tok: usize) -> ProductKind {
        ProductKind {
            weights: ty.name(),
            prefill: n_tok >= PREFILL_MIN_TOKENS,
        }
    }

    /// `TQ2_0/decode`, `F16/prefill`.
    pub fn label(&self) -> String {
        format!(
            "{}/{}",
            self.weights,
            if self.prefill { "prefill" } else { "decode" }
        )
    }
}

/// The variant for each kind of product, and for everything else (norms, RoPE, attention); and
/// the measured knobs of each kind's kernels: how far ahead decode kernels prefetch the weights,
/// and how many rows (decode) or tokens (prefill) a kernel call takes where the variant offers a
/// choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPlan {
    /// Attention, RoPE, softmax, the FFN activation, and any product kind not listed.
    pub base: Kernel,
    pub products: BTreeMap<ProductKind, Kernel>,
    /// Decode kinds' prefetch distance in bytes (0: none); a kind not listed runs its kernels'
    /// own distance.
    pub prefetch: BTreeMap<ProductKind, usize>,
    /// Rows (decode kinds) or tokens (prefill kinds) per kernel call; a kind not listed runs its
    /// variant's own grouping.
    pub groups: BTreeMap<ProductKind, usize>,
    /// How far ahead of the row it reads the attention prefetches the KV cache (bytes, 0: none),
    /// for a base variant whose attention prefetches ([`Kernel::tunes_attention_prefetch`]);
    /// `None`: [`crate::attention::PREFETCH`].
    pub attention_prefetch: Option<usize>,
    /// Whether the KV cache's chunks take huge pages (`Some(true)`) or small ones, as measured
    /// with the attention ([`tune`]); `None`: `BITNET_KV_PAGES` decides
    /// ([`crate::attention::KV_PAGES_VAR`], small unless set).
    pub kv_huge: Option<bool>,
}

impl KernelPlan {
    /// One variant for everything (`BITNET_KERNEL`, `--kernel`).
    pub fn uniform(k: Kernel) -> KernelPlan {
        KernelPlan {
            base: k,
            products: BTreeMap::new(),
            prefetch: BTreeMap::new(),
            groups: BTreeMap::new(),
            attention_prefetch: None,
            kv_huge: None,
        }
    }

    /// The variant of a product of `ty` weights with `n_tok` tokens.
    pub fn product(&self, ty: GgmlType, n_tok: usize) -> Kernel {
        self.products
            .get(&ProductKind::of(ty, n_tok))
            .copied()
            .unwrap_or(self.base)
    }

    /// The prefetch distance the plan chose for a product of `ty` weights with `n_tok` tokens
    /// (decode kinds only; `None`: the kernels' own).
    pub fn prefetch(&self, ty: GgmlType, n_tok: usize) -> Option<usize> {
        self.prefetch.get(&ProductKind::of(ty, n_tok)).copied()
    }

    /// The rows or tokens per kernel call the plan chose for a product of `ty` weights with
    /// `n_tok` tokens (`None`: the variant's own).
    pub fn group(&self, ty: GgmlType, n_tok: usize) -> Option<usize> {
        self.groups.get(&ProductKind::of(ty, n_tok)).copied()
    }

    /// The attention's prefetch distance in bytes under this plan.
    pub fn attention_distance(&self) -> usize {
        self.attention_prefetch
            .unwrap_or(crate::attention::PREFETCH)
    }

    /// `label → variant` for reports and receipts (the base under `other`), with a kind's
    /// chosen knobs after the variant: `vnni256 rows 8 prefetch 4096` (decode: rows per call,
    /// prefetch distance in bytes), `vnni256 tokens 2` (prefill: tokens per call), `avx2 prefetch
    /// 2048` (`other`: the attention's prefetch distance).
    pub fn describe(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = self
            .products
            .iter()
            .map(|(k, v)| {
                let mut text = v.suffix().to_string();
                if let Some(g) = self.groups.get(k) {
                    let unit = if k.prefill { "tokens" } else { "rows" };
                    text.push_str(&format!(" {unit} {g}"));
                }
                if let Some(d) = self.prefetch.get(k) {
                    text.push_str(&format!(" prefetch {d}"));
                }
                (k.label(), text)
            })
            .collect();
        let mut other = self.base.suffix().to_string();
        if let Some(d) = self.attention_prefetch {
            other.push_str(&format!(" prefetch {d}"));
        }
        if let Some(h) = self.kv_huge {
            other.push_str(if h { " kv huge" } else { " kv small" });
        }
        m.insert("other".into(), other);
        m
    }

    /// The plan [`describe`](Self::describe) wrote; `None` when a label or variant is unknown
    /// or not available on this CPU.
    pub fn from_description(d: &BTreeMap<String, String>) -> Option<KernelPlan> {
        let plan = KernelPlan::parse_description(d).ok()?;
        plan.variants()
            .iter()
            .all(|k| k.is_available())
            .then_some(plan)
    }

    /// The plan a description names, whatever CPU wrote it (a receipt's `kernel_plan`): an
    /// error names the first unknown kind, variant or knob, or the missing `other` entry.
    pub fn parse_description(d: &BTreeMap<String, String>) -> Result<KernelPlan, String> {
        let variant = |kind: &str, s: &str| {
            Kernel::ALL
                .into_iter()
                .find(|k| k.suffix() == s)
                .ok_or_else(|| {
                    format!("gives `{kind}` the variant `{s}`, which this engine does not have")
                })
        };
        let other = d
            .get("other")
            .ok_or("has no `other` entry (the variant of everything else)")?;
        let mut words = other.split(' ');
        let mut plan = KernelPlan::uniform(variant("other", words.next().unwrap_or_default())?);
        let bad = || {
            format!(
                "gives `other` the value `{other}`: expected a variant, then `prefetch BYTES` \
                 where its attention prefetches ({}), then `kv huge` or `kv small`, each at \
                 most once",
                Kernel::ALL
                    .iter()
                    .filter(|k| k.tunes_attention_prefetch())
                    .map(|k| k.suffix())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        while let Some(knob) = words.next() {
            let value = words.next().ok_or_else(bad)?;
            match knob {
                "prefetch"
                    if plan.base.tunes_attention_prefetch()
                        && plan.attention_prefetch.is_none()
                        && plan.kv_huge.is_none() =>
                {
                    plan.attention_prefetch = Some(prefetch_distance("other", other, value)?);
                }
                "kv" if plan.kv_huge.is_none() => {
                    plan.kv_huge = Some(match value {
                        "huge" => true,
                        "small" => false,
                        _ => return Err(bad()),
                    });
                }
                _ => return Err(bad()),
            }
        }
        for (label, value) in d {
            if label == "other" {
                continue;
            }
            let (ty, kind) = label
                .split_once('/')
                .and_then(|(w, phase)| {
                    let ty = GgmlType::all().find(|t| t.name() == w)?;
                    let prefill = match phase {
                        "prefill" => true,
                        "decode" => false,
                        _ => return None,
                    };
                    Some((
                        ty,
                        ProductKind {
                            weights: ty.name(),
                            prefill,
                        },
                    ))
                })
                .ok_or_else(|| {
                    format!(
                        "has the kind `{label}`, expected `other` or `<weight type>/decode|prefill`"
                    )
                })?;
            let mut words = value.split(' ');
            let k = variant(label, words.next().unwrap_or_default())?;
            plan.products.insert(kind, k);
            let group_word = if kind.prefill { "tokens" } else { "rows" };
            let expected = if kind.prefill {
                "`tokens N`".to_string()
            } else {
                "`rows N` and `prefetch BYTES`".to_string()
            };
            while let Some(knob) = words.next() {
                let n = words.next().unwrap_or_default();
                if knob == "prefetch" && !kind.prefill && !plan.prefetch.contains_key(&kind) {
                    plan.prefetch
                        .insert(kind, prefetch_distance(label, value, n)?);
                } else if knob == group_word && !plan.groups.contains_key(&kind) {
                    let offered = k.groups(ty, kind.prefill);
                    let g = n
                        .parse::<usize>()
                        .ok()
                        .filter(|g| offered.contains(g))
                        .ok_or_else(|| {
                            format!(
                                "gives `{label}` the value `{value}`: {knob} `{n}` is not one of \
                                 {offered:?} (the groups `{}` offers for {ty})",
                                k.suffix()
                            )
                        })?;
                    plan.groups.insert(kind, g);
                } else {
                    return Err(format!(
                        "gives `{label}` the value `{value}`: after the variant, expected at \
                         most {expected} once each"
                    ));
                }
            }
        }
        Ok(plan)
    }

    /// One variant forced for everything, with knobs for every kind of product that takes them:
    /// `avx512`, `auto`, `avx2 prefetch 16384`, `vnni256 rows 8 tokens 2 prefetch 0` (what
    /// `--kernel` and `BITNET_KERNEL` accept: `rows` per decode call and `tokens` per prefill
    /// call where the variant comes in several groups, `prefetch` bytes for its decode kernels
    /// and its attention).
    /// Returns the plan and the spec as the variant's name and the knobs given (a plain variant
    /// gives [`KernelPlan::uniform`]). An error says what is wrong and what is expected.
    pub fn forced(spec: &str) -> Result<(KernelPlan, String), String> {
        let mut words = spec.split_whitespace();
        let k = Kernel::parse(words.next().unwrap_or_default())?;
        let mut knobs: BTreeMap<&str, usize> = BTreeMap::new();
        let mut label = k.suffix().to_string();
        while let Some(knob) = words.next() {
            let n = words.next().unwrap_or_default();
            let value = n.parse::<usize>().ok();
            let value = match knob {
                "rows" | "tokens" => {
                    // The groups some product of the variant offers in that phase.
                    let mut offered: Vec<usize> = GgmlType::all()
                        .flat_map(|t| k.groups(t, knob == "tokens").iter().copied())
                        .collect();
                    offered.sort_unstable();
                    offered.dedup();
                    if offered.is_empty() {
                        return Err(format!(
                            "`{spec}`: `{}` comes in one grouping for `{knob}`; it is for a \
                             variant with several (vnni256: {:?} rows or tokens; the x86 \
                             variants' F16/F32 decode: {:?} rows)",
                            k.suffix(),
                            super::GROUPS,
                            super::FLOAT_ROWS
                        ));
                    }
                    value.filter(|g| offered.contains(g)).ok_or_else(|| {
                        format!("`{spec}`: {knob} `{n}` is not one of {offered:?}")
                    })?
                }
                "prefetch" => {
                    if !GgmlType::all().any(|t| k.tunes_prefetch(t)) {
                        return Err(format!(
                            "`{spec}`: the `{}` kernels take no prefetch distance",
                            k.suffix()
                        ));
                    }
                    value.filter(|d| *d <= MAX_PREFETCH).ok_or_else(|| {
                        format!(
                            "`{spec}`: prefetch `{n}` is not a byte count from 0 to \
                             {MAX_PREFETCH}"
                        )
                    })?
                }
                "kv" => match n {
                    "huge" => 1,
                    "small" => 0,
                    _ => {
                        return Err(format!(
                            "`{spec}`: kv `{n}` is not `huge` or `small` (the KV cache's pages)"
                        ))
                    }
                },
                _ => {
                    return Err(format!(
                        "`{spec}`: expected a variant, then at most `rows N`, `tokens N`, \
                         `prefetch BYTES` and `kv huge|small` once each, found `{knob}`"
                    ))
                }
            };
            if knobs.insert(knob, value).is_some() {
                return Err(format!("`{spec}`: `{knob}` is given twice"));
            }
            if knob == "kv" {
                label.push_str(&format!(" kv {n}"));
            } else {
                label.push_str(&format!(" {knob} {value}"));
            }
        }
        let mut plan = KernelPlan::uniform(k);
        plan.kv_huge = knobs.remove("kv").map(|v| v == 1);
        if knobs.is_empty() {
            return Ok((plan, label));
        }
        if let Some(&d) = knobs
            .get("prefetch")
            .filter(|_| k.tunes_attention_prefetch())
        {
            plan.attention_prefetch = Some(d);
        }
        // The weight types a product can have.
        let types = [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::TQ1_0,
            GgmlType::TQ2_0,
            GgmlType::I2_S,
            GgmlType::Q6_K,
        ];
        for ty in types {
            for prefill in [false, true] {
                let kind = ProductKind {
                    weights: ty.name(),
                    prefill,
                };
                plan.products.insert(kind, k);
                let group = knobs.get(if prefill { "tokens" } else { "rows" });
                if let Some(&g) = group.filter(|g| k.groups(ty, prefill).contains(g)) {
                    plan.groups.insert(kind, g);
                }
                if let Some(&d) = knobs.get("prefetch").filter(|_| !prefill) {
                    if k.tunes_prefetch(ty) {
                        plan.prefetch.insert(kind, d);
                    }
                }
            }
        }
        Ok((plan, label))
    }

    /// [`KernelPlan::forced`] from the environment variable `BITNET_KERNEL`, when set and not
    /// empty.
    pub fn from_env() -> Result<Option<(KernelPlan, String)>, String> {
        match std::env::var("BITNET_KERNEL") {
            Ok(v) if !v.is_empty() => KernelPlan::forced(&v)
                .map(Some)
                .map_err(|e| format!("BITNET_KERNEL: {e}")),
            _ => Ok(None),
        }
    }

    /// The variants the plan names (its base first).
    pub fn variants(&self) -> Vec<Kernel> {
        let mut v = vec![self.base];
        v.extend(self.products.values().copied());
        v
    }
}

/// A description's prefetch distance `n` (bytes, at most [`MAX_PREFETCH`]), from the entry
/// `label: value`; the error names both.
fn prefetch_distance(label: &str, value: &str, n: &str) -> Result<usize, String> {
    n.parse::<usize>()
        .ok()
        .filter(|d| *d <= MAX_PREFETCH)
        .ok_or_else(|| {
            format!(
                "gives `{label}` the value `{value}`: the prefetch distance `{n}` is not a byte \
                 count from 0 to {MAX_PREFETCH}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_descriptions_round_trip() {
        assert_eq!(ProductKind::of(GgmlType::TQ2_0, 1).label(), "TQ2_0/decode");
        assert_eq!(ProductKind::of(GgmlType::TQ2_0, 3).label(), "TQ2_0/decode");
        assert_eq!(ProductKind::of(GgmlType::F16, 4).label(), "F16/prefill");
        let mut plan = KernelPlan::uniform(Kernel::Scalar);
        plan.products
            .insert(ProductKind::of(GgmlType::I2_S, 1), Kernel::Scalar);
        assert_eq!(plan.product(GgmlType::I2_S, 1), Kernel::Scalar);
        assert_eq!(plan.product(GgmlType::F16, 100), Kernel::Scalar);
        let d = plan.describe();
        assert_eq!(d["I2_S/decode"], "scalar");
        assert_eq!(d["other"], "scalar");
        assert_eq!(KernelPlan::from_description(&d), Some(plan));
        let mut bad = d.clone();
        bad.insert("Q9/decode".into(), "scalar".into());
        assert_eq!(KernelPlan::from_description(&bad), None);
        let mut bad = d;
        bad.insert("other".into(), "sse9".into());
        assert_eq!(KernelPlan::from_description(&bad), None);
    }

    #[test]
    fn the_kv_caches_pages_are_described_read_back_forced_and_bad_ones_refused() {
        let mut plan = KernelPlan::uniform(Kernel::Avx2);
        plan.attention_prefetch = Some(2048);
        plan.kv_huge = Some(true);
        let d = plan.describe();
        assert_eq!(d["other"], "avx2 prefetch 2048 kv huge");
        assert_eq!(KernelPlan::parse_description(&d), Ok(plan.clone()));
        plan.attention_prefetch = None;
        plan.kv_huge = Some(false);
        let d = plan.describe();
        assert_eq!(d["other"], "avx2 kv small");
        assert_eq!(KernelPlan::parse_description(&d), Ok(plan.clone()));
        for bad in [
            "avx2 kv",
            "avx2 kv enormous",
            "avx2 kv huge kv small",
            "avx2 kv huge prefetch 2048",
            "avx2 prefetch",
        ] {
            let mut d = d.clone();
            d.insert("other".into(), bad.into());
            let err = KernelPlan::parse_description(&d).unwrap_err();
            assert!(err.contains("`kv huge` or `kv small`"), "{bad}: {err}");
        }
        let (forced, label) = KernelPlan::forced("scalar kv huge").unwrap();
        assert_eq!((forced.base, forced.kv_huge), (Kernel::Scalar, Some(true)));
        assert_eq!(label, "scalar kv huge");
        assert!(forced.products.is_empty(), "kv alone sets no product knob");
        let err = KernelPlan::forced("scalar kv big").unwrap_err();
        assert!(err.contains("`huge` or `small`"), "{err}");
        assert_eq!(KernelPlan::forced("scalar").unwrap().0.kv_huge, None);
    }

    #[test]
    fn row_and_token_groups_are_described_and_read_back_and_bad_ones_refused() {
        let mut plan = KernelPlan::uniform(Kernel::Avx2);
        let (decode, prefill) = (
            ProductKind::of(GgmlType::TQ1_0, 1),
            ProductKind::of(GgmlType::TQ1_0, 64),
        );
        plan.products.insert(decode, Kernel::Vnni256);
        plan.groups.insert(decode, 8);
        plan.prefetch.insert(decode, 4096);
        plan.products.insert(prefill, Kernel::Vnni256);
        plan.groups.insert(prefill, 2);
        let d = plan.describe();
        assert_eq!(d["TQ1_0/decode"], "vnni256 rows 8 prefetch 4096");
        assert_eq!(d["TQ1_0/prefill"], "vnni256 tokens 2");
        assert_eq!(KernelPlan::parse_description(&d), Ok(plan.clone()));
        assert_eq!(plan.group(GgmlType::TQ1_0, 3), Some(8));
        assert_eq!(plan.group(GgmlType::TQ1_0, 4), Some(2));
        assert_eq!(plan.group(GgmlType::TQ2_0, 1), None);
        let refused = |label: &str, value: &str| {
            let mut bad = d.clone();
            bad.insert(label.into(), value.into());
            KernelPlan::parse_description(&bad).unwrap_err()
        };
        // A group the variant does not come in, or a variant with one fixed grouping.
        let e = refused("TQ1_0/decode", "vnni256 rows 3");
        assert!(e.contains("rows `3`") && e.contains("[2, 4, 8]"), "{e}");
        let e = refused("TQ1_0/decode", "avx512 rows 4");
        assert!(e.contains("`avx512` offers"), "{e}");
        let e = refused("I2_S/decode", "avx2 rows 8");
        assert!(e.contains("rows `8`") && e.contains("[1, 2, 4, 32]"), "{e}");
        let e = refused("I2_S/decode", "vnni256 rows 32");
        assert!(e.contains("rows `32`") && e.contains("[1, 2, 4]"), "{e}");
        let e = refused("I2_S/decode", "avx512 rows 4");
        assert!(e.contains("`avx512` offers"), "{e}");
        let e = refused("TQ2_0/prefill", "vnni256 tokens 99999999999999999999");
        assert!(e.contains("tokens `99999999999999999999`"), "{e}");
        // The attention's distance under `other`, for a base whose attention prefetches.
        let mut with_attention = plan.clone();
        with_attention.attention_prefetch = Some(8192);
        let da = with_attention.describe();
        assert_eq!(da["other"], "avx2 prefetch 8192");
        assert_eq!(KernelPlan::parse_description(&da), Ok(with_attention));
        for value in [
            "scalar prefetch 0",
            "avx2 prefetch",
            "avx2 prefetch 2097152",
            "avx2 prefetch 0 prefetch 0",
            "avx2 rows 2",
        ] {
            let e = refused("other", value);
            assert!(e.contains("`other`") && e.contains(value), "{value}: {e}");
        }
        // Rows are decode's, tokens prefill's; each knob once; nothing else.
        for (label, value) in [
            ("TQ1_0/decode", "vnni256 tokens 4"),
            ("TQ1_0/prefill", "vnni256 rows 4"),
            ("TQ1_0/decode", "vnni256 rows 4 rows 8"),
            ("TQ1_0/decode", "vnni256 prefetch 0 prefetch 0"),
            ("TQ1_0/decode", "vnni256 tiles 4"),
            ("TQ1_0/decode", "vnni256 rows"),
            ("TQ1_0/decode", "vnni256  rows 4"),
        ] {
            let e = refused(label, value);
            assert!(
                e.contains(&format!("`{label}`")) && e.contains(value),
                "{label} {value}: {e}"
            );
        }
    }

    #[test]
    fn a_forced_variant_takes_knobs_for_every_kind_and_refuses_bad_ones() {
        // A plain variant: one variant for everything, no kinds listed.
        let (plan, label) = KernelPlan::forced("scalar").unwrap();
        assert_eq!(
            (plan, label.as_str()),
            (KernelPlan::uniform(Kernel::Scalar), "scalar")
        );
        let (plan, label) = KernelPlan::forced("auto").unwrap();
        assert_eq!(
            (plan, label),
            (
                KernelPlan::uniform(Kernel::best()),
                Kernel::best().suffix().to_string()
            )
        );
        // Knobs reach every kind of product that takes them, and only those.
        for k in Kernel::available() {
            if !GgmlType::all().any(|t| k.tunes_prefetch(t)) {
                continue;
            }
            let spec = format!("{}  prefetch 0", k.suffix());
            let (plan, label) = KernelPlan::forced(&spec).unwrap();
            assert_eq!(label, format!("{} prefetch 0", k.suffix()));
            assert_eq!(plan.base, k);
            for ty in [GgmlType::TQ2_0, GgmlType::I2_S, GgmlType::F16] {
                assert_eq!(plan.product(ty, 1), k);
                assert_eq!(
                    plan.prefetch(ty, 1),
                    k.tunes_prefetch(ty).then_some(0),
                    "{k:?} {ty}"
                );
                assert_eq!(plan.prefetch(ty, 16), None);
                assert_eq!(plan.group(ty, 1), None);
            }
            // And the attention, where it prefetches.
            let want = k.tunes_attention_prefetch().then_some(0);
            assert_eq!(plan.attention_prefetch, want, "{k:?}");
            assert_eq!(
                plan.attention_distance(),
                want.unwrap_or(crate::attention::PREFETCH)
            );
            // What the plan describes reads back as the same plan (a receipt's `kernel_plan`).
            assert_eq!(KernelPlan::parse_description(&plan.describe()), Ok(plan));
        }
        if Kernel::Vnni256.is_available() {
            let (plan, label) = KernelPlan::forced("vnni256 tokens 8 rows 2").unwrap();
            assert_eq!(label, "vnni256 tokens 8 rows 2");
            assert_eq!(plan.group(GgmlType::TQ1_0, 1), Some(2));
            assert_eq!(plan.group(GgmlType::TQ2_0, 64), Some(8));
            // Two rows: the float decode kernels take it too (`FLOAT_ROWS`), not in prefill.
            assert_eq!(plan.group(GgmlType::F16, 1), Some(2));
            assert_eq!(plan.group(GgmlType::F16, 64), None);
            assert_eq!(plan.prefetch(GgmlType::TQ2_0, 1), None);
            assert_eq!(plan.describe()["TQ2_0/decode"], "vnni256 rows 2");
            let e = KernelPlan::forced("vnni256 rows 3").unwrap_err();
            assert!(e.contains("rows `3` is not one of [1, 2, 4, 8]"), "{e}");
            // Four rows: the ternary and the float decode kernels both take it.
            let (plan, _) = KernelPlan::forced("vnni256 rows 4").unwrap();
            assert_eq!(plan.group(GgmlType::TQ2_0, 1), Some(4));
            assert_eq!(plan.group(GgmlType::F16, 1), Some(4));
            assert_eq!(plan.group(GgmlType::I2_S, 1), Some(4));
            assert_eq!(plan.group(GgmlType::I2_S, 16), None);
            // Eight rows: the ternary kernels only (I2_S comes in 1, 2 and 4).
            let (plan, _) = KernelPlan::forced("vnni256 rows 8").unwrap();
            assert_eq!(plan.group(GgmlType::TQ2_0, 1), Some(8));
            assert_eq!(plan.group(GgmlType::I2_S, 1), None);
        }
        if Kernel::Avx2.is_available() {
            // The float decode kernels' one row per call; no prefill grouping.
            let (plan, _) = KernelPlan::forced("avx2 rows 1").unwrap();
            assert_eq!(plan.group(GgmlType::F16, 1), Some(1));
            assert_eq!(plan.group(GgmlType::F32, 2), Some(1));
            assert_eq!(plan.group(GgmlType::F16, 16), None);
            assert_eq!(plan.group(GgmlType::TQ2_0, 1), None);
            assert_eq!(plan.group(GgmlType::I2_S, 1), Some(1));
            assert_eq!(plan.describe()["F16/decode"], "avx2 rows 1");
            assert_eq!(plan.describe()["I2_S/decode"], "avx2 rows 1");
            assert_eq!(KernelPlan::parse_description(&plan.describe()), Ok(plan));
            let e = KernelPlan::forced("avx2 tokens 4").unwrap_err();
            assert!(
                e.contains("`avx2` comes in one grouping for `tokens`"),
                "{e}"
            );
        }
        for (spec, want) in [
            (
                "scalar prefetch 4096",
                "the `scalar` kernels take no prefetch distance",
            ),
            (
                "scalar rows 4",
                "`scalar` comes in one grouping for `rows`; it is for a variant",
            ),
            ("sse9 rows 4", "unknown kernel `sse9`"),
            ("", "unknown kernel ``"),
            ("scalar tiles 4", "found `tiles`"),
        ] {
            let e = KernelPlan::forced(spec).unwrap_err();
            assert!(e.contains(want), "{spec:?}: {e}");
        }
        let simd = Kernel::best();
        if simd.tunes_prefetch(GgmlType::TQ2_0) {
            for (spec, want) in [
                (
                    format!("{} prefetch 4096 prefetch 0", simd.suffix()),
                    "`prefetch` is given twice",
                ),
                (
                    format!("{} prefetch 2000000", simd.suffix()),
                    "prefetch `2000000` is not a byte count from 0 to 1048576",
                ),
                (
                    format!("{} prefetch", simd.suffix()),
                    "prefetch `` is not a byte count",
                ),
            ] {
                let e = KernelPlan::forced(&spec).unwrap_err();
                assert!(e.contains(want), "{spec:?}: {e}");
            }
        }
    }

    #[test]
    fn prefetch_distances_are_described_and_read_back_and_bad_ones_refused() {
        let mut plan = KernelPlan::uniform(Kernel::Scalar);
        let decode = ProductKind::of(GgmlType::TQ2_0, 1);
        plan.products.insert(decode, Kernel::Scalar);
        plan.prefetch.insert(decode, 16384);
        plan.products
            .insert(ProductKind::of(GgmlType::F16, 1), Kernel::Scalar);
        plan.prefetch.insert(ProductKind::of(GgmlType::F16, 1), 0);
        let d = plan.describe();
        assert_eq!(d["TQ2_0/decode"], "scalar prefetch 16384");
        assert_eq!(d["F16/decode"], "scalar prefetch 0");
        assert_eq!(KernelPlan::parse_description(&d), Ok(plan.clone()));
        assert_eq!(plan.prefetch(GgmlType::TQ2_0, 2), Some(16384));
        assert_eq!(plan.prefetch(GgmlType::TQ2_0, 4), None);
        assert_eq!(plan.prefetch(GgmlType::I2_S, 1), None);
        let refused = |label: &str, value: &str| {
            let mut bad = d.clone();
            bad.insert(label.into(), value.into());
            KernelPlan::parse_description(&bad).unwrap_err()
        };
        let e = refused("TQ2_0/decode", "scalar prefetch 99999999999");
        assert!(
            e.contains("`TQ2_0/decode`") && e.contains("0 to 1048576"),
            "{e}"
        );
        let e = refused("TQ2_0/decode", "scalar prefetch -4");
        assert!(e.contains("`-4`"), "{e}");
        let e = refused("TQ2_0/decode", "scalar prefetch ");
        assert!(e.contains("prefetch distance"), "{e}");
        let e = refused("TQ2_0/prefill", "scalar prefetch 4096");
        assert!(
            e.contains("`TQ2_0/prefill`") && e.contains("at most `tokens N`"),
            "{e}"
        );
        let e = refused("TQ2_0/decode", "sse9 prefetch 4096");
        assert!(e.contains("`sse9`"), "{e}");
    }
}
