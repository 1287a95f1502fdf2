//! Planted bugs, for the harness's own tests (`harness/tests/planted.rs`): realistic one-line
//! engine bugs, each switched on by name at run time, so those tests can show that the harness
//! catches each one and names the right layer and stage. The switch exists only with the
//! `planted` cargo feature, which only the harness's test builds enable (a dev-dependency
//! feature); a release build has no switch and [`on`] is a constant `false` there.

/// Whether this build has the switch (the `planted` feature): a test build, whose checks in hot
/// loops cost time, so `harness bench` marks its reports and `harness perf-gate` refuses them.
pub const COMPILED: bool = cfg!(feature = "planted");

/// Every bug that can be planted, by name.
pub const BUGS: &[&str] = &[
    "norm_eps_x2",
    "rope_base_default",
    "rope_position_plus_one",
    "rope_pairs_adjacent",
    "gqa_kv_head_swapped",
    "attn_scale_inverse_dim",
    "causal_mask_missing",
    "kv_cache_value_offset",
    "v_cache_f16",
    "sub_norm_weight_swapped",
    "projection_scale_dropped",
    "fused_projections_first_scale",
    "q8k_scale_128",
    "q8k_round_half_away",
    "last_logits_row_zero",
    "tokenizer_merge_rank_reversed",
    "thread_split_offset",
    "f16_embedding_next_row",
    "f16_subnormals_flushed",
    "simd_softmax_remainder",
    "simd_decode_pair_lane_order",
    "embedding_row_past_end",
    "relu2_passes_negatives",
    "tq1_base3_qh_powers_reversed",
    "q6_k_vec_dot_order_for_many_tokens",
];

#[cfg(feature = "planted")]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 0: none; i + 1: `BUGS[i]`; `usize::MAX`: not read from `BITNET_PLANT` yet.
    static ACTIVE: AtomicUsize = AtomicUsize::new(usize::MAX);

    fn index(name: &str) -> usize {
        1 + super::BUGS
            .iter()
            .position(|b| *b == name)
            .unwrap_or_else(|| panic!("no planted bug named `{name}`"))
    }

    /// Plant `name` (one of [`super::BUGS`]) for the whole process, or clear with `None`.
    pub fn set(name: Option<&str>) {
        ACTIVE.store(name.map_or(0, index), Ordering::SeqCst);
    }

    /// Whether bug `name` is planted: by [`set`], or else by the environment variable
    /// `BITNET_PLANT` (for a test-built `harness` binary).
    #[inline]
    pub fn on(name: &str) -> bool {
        let mut i = ACTIVE.load(Ordering::Relaxed);
        if i == usize::MAX {
            let from_env = std::env::var("BITNET_PLANT").map_or(0, |v| index(v.trim()));
            let _ =
                ACTIVE.compare_exchange(usize::MAX, from_env, Ordering::SeqCst, Ordering::SeqCst);
            i = ACTIVE.load(Ordering::SeqCst);
        }
        i != 0 && super::BUGS[i - 1] == name
    }
}

#[cfg(not(feature = "planted"))]
mod imp {
    /// Always `false`: this build has no planted bugs.
    #[inline(always)]
    pub fn on(_name: &str) -> bool {
        false
    }
}

pub use imp::*;
